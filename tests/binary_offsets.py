"""Binary tensors at every byte offset of the body, sent by tritonclient's HTTP client.

A binary tensor follows the JSON header, so it starts wherever the header ends: a numpy view of
it is unaligned for 7 of 8 header lengths of an FP64 tensor. `check_every_offset` sends each
served model its inputs (made from its metadata) in every numeric datatype, binary behind JSON
headers of 8 successive lengths (a longer request `id` each time), and checks that each answer is
the one the same request gets as plain JSON: same status and message, same outputs."""

from __future__ import annotations

import numpy as np
import requests
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

DTYPES = [np.bool_, np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32,
          np.int64, np.float16, np.float32, np.float64]
ROWS = 3


def example_inputs(metadata: dict, dtype) -> list[tuple[str, np.ndarray]]:
    """Every input of the model as an array of `dtype` (BYTES inputs as text), from its
    metadata: free dimensions are ROWS, values small positive numbers every dtype holds."""
    rng = np.random.default_rng(7)
    arrays = []
    for spec in metadata["inputs"]:
        shape = [ROWS if d < 0 else d for d in spec["shape"]] or [ROWS]
        if spec["datatype"] == "BYTES":
            words = np.array(["red", "green", "blue"], dtype=object)
            arrays.append((spec["name"], np.resize(words, shape).astype(object)))
        else:
            arrays.append((spec["name"], rng.integers(1, 8, size=shape).astype(dtype)))
    # Inputs of a small first tensor (an odd number of bytes) shift the others too.
    return arrays


def _infer(client, model: str, arrays, binary: bool, request_id: str):
    inputs = []
    for name, array in arrays:
        datatype = "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype)
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    try:
        result = client.infer(model, inputs, request_id=request_id)
    except InferenceServerException as exc:
        return exc.status(), exc.message()
    outputs = result.get_response()["outputs"]
    return "200", {o["name"]: result.as_numpy(o["name"]) for o in outputs}


def _same(got, want) -> bool:
    if got[0] != want[0] or got[0] != "200":
        return got == want
    return got[1].keys() == want[1].keys() and all(
        np.array_equal(got[1][k], want[1][k], equal_nan=got[1][k].dtype.kind == "f")
        for k in want[1])


def check_every_offset(url: str, models: list[str] | None = None) -> dict:
    """Every ready model served at `url` (or those named), every datatype, every offset; returns
    {(model, datatype): status} of the plain JSON answers, for callers to check that the
    requests did reach the models. Fails on the first binary answer that differs."""
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    if models is None:
        index = requests.post(f"{url}/v2/repository/index", timeout=10).json()
        models = [entry["name"] for entry in index if entry["state"] == "READY"]
    statuses = {}
    for model in models:
        metadata = client.get_model_metadata(model)
        for dtype in DTYPES:
            arrays = example_inputs(metadata, dtype)
            want = _infer(client, model, arrays, binary=False, request_id="")
            statuses[(model, np_to_triton_dtype(np.dtype(dtype)))] = want[0]
            for offset in range(8):
                got = _infer(client, model, arrays, binary=True, request_id="x" * offset)
                assert _same(got, want), (
                    f"{model}, {np.dtype(dtype).name} at header offset +{offset}: binary "
                    f"answered {got}, JSON {want}")
    return statuses
