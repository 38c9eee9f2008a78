"""Finding the model file in its folder and reading it: a torch.export archive (`.pt2`) or
TorchScript (`.pt`/`.pth`), with a message that says what to do when a file cannot be read."""

from __future__ import annotations

import json
import logging
import threading
import zipfile
from pathlib import Path

from modelserver.runtime.files import find_model_file

EXPORT_EXTENSIONS = (".pt2",)
SCRIPT_EXTENSIONS = (".pt", ".pth")
MODEL_EXTENSIONS = EXPORT_EXTENSIONS + SCRIPT_EXTENSIONS
MAR_HINT = (" (TorchServe .mar archives are not served: save the model with torch.export.save "
            "to model.pt2, or as TorchScript to model.pt)")


def find_model(model_dir: str) -> Path:
    """The one model file in `model_dir` (before importing torch: a missing file fails fast)."""
    hint = MAR_HINT if any(Path(model_dir).rglob("*.mar")) else ""
    return find_model_file(model_dir, MODEL_EXTENSIONS, "PyTorch", hint=hint,
                           expected="one torch.export archive (.pt2) or TorchScript file "
                                    "(.pt, .pth)")


_threads = threading.Lock()
_threads_set = False


def import_torch(threads: int):
    """torch, with its intra-op threads sized to this worker's share of the CPUs (once)."""
    global _threads_set
    import torch

    with _threads:
        if not _threads_set:
            torch.set_num_threads(threads)
            try:
                torch.set_num_interop_threads(threads)
            except RuntimeError:
                pass  # inter-op work already ran in this process
            _threads_set = True
    return torch


def _archive_info(path: Path) -> dict:
    """The exported program's own record: torch_version, schema_version."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist()
                         if n.split("/")[-2:] == ["models", "model.json"]), None)
            if name is None:
                return {}
            data = json.loads(archive.read(name))
    except (OSError, ValueError, zipfile.BadZipFile):
        return {}
    return {key: data.get(key) for key in ("torch_version", "schema_version")}


def load_exported_program(torch, path: Path):
    info = _archive_info(path)
    made_by = info.get("torch_version")
    version = info.get("schema_version") or {}
    try:
        from torch._export.serde.schema import SCHEMA_VERSION
    except ImportError:  # pragma: no cover - moved in a later torch
        SCHEMA_VERSION = None
    if SCHEMA_VERSION and version.get("major") not in (None, SCHEMA_VERSION[0]):
        raise RuntimeError(
            f"{path.name} was exported by torch {made_by or 'of another version'} in export "
            f"format {version.get('major')}.{version.get('minor')}; this server runs torch "
            f"{torch.__version__}, which reads format {SCHEMA_VERSION[0]}.x: export the model "
            f"again with torch {torch.__version__.split('+')[0]}, or serve it with the torch "
            "version that exported it")
    # torch.export.load logs the real failure (with a traceback) and raises a generic error:
    # keep the log record and report its message instead.
    captured: list[logging.LogRecord] = []
    handler = _Capture(captured)
    logger = logging.getLogger("torch.export")
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        return torch.export.load(str(path))
    except Exception as exc:
        cause = next((r.exc_info[1] for r in captured if r.exc_info and r.exc_info[1]), exc)
        note = ""
        if made_by and made_by != torch.__version__:
            note = f" (it was exported by torch {made_by}; this server runs {torch.__version__})"
        raise RuntimeError(f"could not load {path.name}: {first_line(cause)}{note}") from None
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


class _Capture(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]):
        super().__init__(logging.DEBUG)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def load_torchscript(torch, path: Path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        names = None
    if names is not None and not any(n.endswith("/constants.pkl") or n == "constants.pkl"
                                     for n in names):
        if any(n.endswith("data.pkl") for n in names):
            raise RuntimeError(
                f"{path.name} is not TorchScript but a torch.save() file (a state_dict or a "
                "pickled module), which needs the model's Python code to load: save the model "
                "with torch.export.save(torch.export.export(model, example_inputs), "
                "'model.pt2'), or torch.jit.script(model).save('model.pt')")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        message = first_line(exc).split("] . ")[-1]  # drop c10's "[enforce fail at ...]"
        raise RuntimeError(f"could not load {path.name} as TorchScript with torch "
                           f"{torch.__version__}: {message}") from None
    module.eval()
    return module


def first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
