"""What the image tests share: the generator (docker/images.txt, VERSION) and docker/ helpers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


generate = load("manifests_generate", REPO / "manifests" / "generate.py")
requirements = load("docker_requirements", REPO / "docker" / "requirements.py")
VERSION = (REPO / "VERSION").read_text().strip()
IMAGES = generate.read_images()
