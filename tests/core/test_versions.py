"""VERSION is the one version: every package carries it."""

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_has_the_version_in_VERSION():
    version = (REPO / "VERSION").read_text().strip()
    projects = [REPO / "storage" / "pyproject.toml", *sorted(REPO.glob("runtimes/*/pyproject.toml"))]
    assert len(projects) >= 3
    for path in projects:
        assert tomllib.loads(path.read_text())["project"]["version"] == version, path
