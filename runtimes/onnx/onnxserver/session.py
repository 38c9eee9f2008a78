"""Finding the `.onnx` file, opening it with ONNX Runtime's CPU provider, and reading what it
takes and returns from the session."""

from __future__ import annotations

import os
from pathlib import Path

from modelserver.runtime.files import latest_version
from modelserver.datatypes import TO_NUMPY
from modelserver.runtime.conform import Spec
from modelserver.runtime.files import find_model_file, model_files

MODEL_EXTENSIONS = (".onnx",)
# ONNX Runtime's element types, as it names them, that have an Open Inference Protocol datatype.
DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
# Triton's parameter for ONNX Runtime's intra-op threads (--backend-config=onnxruntime,...).
INTRA_FLAG = "intra_op_thread_count"


def model_folder(model_dir: str | os.PathLike) -> tuple[Path, str | None]:
    """The folder holding the model, and its version: Triton's layout (`1/model.onnx`) serves
    the highest numbered folder, as the model repository does."""
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"model directory {folder} does not exist")
    return latest_version(folder)


def holds_model(folder: Path) -> bool:
    try:
        return bool(model_files(model_folder(folder)[0], MODEL_EXTENSIONS))
    except OSError:
        return False


def find_model(model_dir: str | os.PathLike) -> tuple[Path, str | None]:
    """The one `.onnx` file, and the version folder it is in, if any."""
    folder, version = model_folder(model_dir)
    path = find_model_file(folder, MODEL_EXTENSIONS, "ONNX",
                           expected="one .onnx file (model.onnx), in the folder or in numbered "
                                    "version folders (1/model.onnx, ...)")
    return path, version


def session_options(ort, threads: int):
    options = ort.SessionOptions()
    # Every operator's work on this worker's share of the CPUs, one operator at a time.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle intra-op threads sleep instead of spinning for the next run: spinning took the CPU
    # the event loop needs (iris: about 10% more CPU per request at 8 and 64 connections).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(ort, model: str | bytes, options, name: str):
    """An InferenceSession on the CPU; `name` is the file, for messages."""
    try:
        return ort.InferenceSession(model, sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own classes for each failure
        raise RuntimeError(f"could not load {name} with ONNX Runtime {ort.__version__}: "
                           f"{ort_message(exc)}") from None


def spec_of(arg, open_rank: bool = False) -> Spec | None:
    """The spec of a session input or output (`open_rank`: the graph leaves its rank open);
    None for one that is not a tensor of a protocol datatype."""
    datatype = DATATYPES.get(arg.type)
    if datatype is None:
        return None
    shape = None if open_rank else tuple(d if isinstance(d, int) and d >= 0 else None
                                         for d in arg.shape)
    return Spec(arg.name, datatype, TO_NUMPY[datatype], shape)


def ort_message(exc: BaseException) -> str:
    """ONNX Runtime's message without its code prefix ("[ONNXRuntimeError] : 2 : ...: ")."""
    text = str(exc).strip() or type(exc).__name__
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    return " ".join(text.split())[:500]
