"""Triton's model configuration extension: `GET /v2/models/{name}/config` and the ModelConfig rpc.

Clients such as perf_analyzer read it to learn whether a model batches and what its tensors
look like. Triton's convention: with `max_batch_size` > 0 the model takes rows along a first
dimension that `dims` leave out; with 0, `dims` are the whole shape. `dynamic_batching` is there
when the server merges concurrent requests. Names and datatypes are those of the model's
metadata."""

from __future__ import annotations

from typing import Any

# Protocol datatype -> Triton's model-config DataType name.
CONFIG_TYPES = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BYTES": "TYPE_STRING",
    "BF16": "TYPE_BF16",
}


def model_config(model, metadata: dict[str, Any]) -> dict[str, Any]:
    """The configuration of a loaded `Model`, whose v2 `metadata` is given, as Triton writes it
    in JSON (proto field names)."""
    settings = model.settings
    rows = settings.max_batch_size or 0  # a row-wise model's rows, merged or not

    def dims(shape: list[int]) -> list[int]:
        return list(shape[1:]) if rows and shape else list(shape)

    config: dict[str, Any] = {
        "name": model.name,
        "platform": model.platform,
        "backend": "",
        "runtime": _runtime(model),
        "max_batch_size": rows,
        "input": [
            {"name": spec["name"], "data_type": CONFIG_TYPES.get(spec["datatype"], "TYPE_INVALID"),
             "format": "FORMAT_NONE", "dims": dims(spec["shape"]), "optional": False}
            for spec in metadata["inputs"]
        ],
        "output": [
            {"name": spec["name"], "data_type": CONFIG_TYPES.get(spec["datatype"], "TYPE_INVALID"),
             "dims": dims(spec["shape"])}
            for spec in metadata["outputs"]
        ],
    }
    if settings.batch_rows:
        config["dynamic_batching"] = {
            "preferred_batch_size": [],
            "max_queue_delay_microseconds": int(settings.max_batch_delay * 1_000_000),
        }
    return config


def _runtime(model) -> str:
    """The package whose Model class serves it (sklearnserver, ...); empty for a script's."""
    package = type(model).__module__.split(".")[0]
    return "" if package == "__main__" else package
