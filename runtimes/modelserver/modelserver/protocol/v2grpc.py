"""The Open Inference Protocol's protobuf encoding of infer requests and responses.

Inputs come as typed `contents` or as `raw_input_contents` (what tritonclient and perf_analyzer
send); raw inputs become numpy arrays with `np.frombuffer`, without a copy. Responses always
carry `raw_output_contents`: perf_analyzer fails on typed contents in a reply, and raw bytes
are also the cheapest to write."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from . import binary
from ..datatypes import to_numpy
from ..errors import InvalidInput
from .proto import grpc_service_pb2 as pb
from ..types import InferRequest, InferResponse, RequestedOutput, Tensor
from .v2json import MAX_DIMS, decode_shape, reshape

# The InferTensorContents field that holds each datatype's elements.
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP16": "fp32_contents",  # no field of its own: FP32 values, narrowed
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def decode_request(message: pb.ModelInferRequest) -> InferRequest:
    inputs = message.inputs
    if not inputs:
        raise InvalidInput("'inputs' must be a non-empty list")
    raw = message.raw_input_contents
    if raw:
        if len(raw) != len(inputs):
            raise InvalidInput(f"the request has {len(inputs)} inputs but {len(raw)} "
                               "raw_input_contents; send one for each input")
        tensors = [_raw_input(item, data) for item, data in zip(inputs, raw)]
    else:
        tensors = [_typed_input(item) for item in inputs]
    if len(tensors) > 1 and len({t.name for t in tensors}) != len(tensors):
        raise InvalidInput("input names must be unique")
    outputs = message.outputs
    return InferRequest(
        inputs=tensors,
        id=message.id or None,
        outputs=[RequestedOutput(o.name, decode_parameters(o.parameters)) for o in outputs]
        if outputs else None,
        parameters=decode_parameters(message.parameters),
    )


def _raw_input(item, data: bytes) -> Tensor:
    name = item.name
    if not name:
        raise InvalidInput("each input needs a 'name'")
    if item.HasField("contents"):
        raise InvalidInput(f"input '{name}' has contents as well as raw_input_contents; "
                           "send one or the other")
    shape = item.shape[:]  # a list; quicker than list()
    if shape and (min(shape) < 0 or len(shape) > MAX_DIMS):
        decode_shape(shape, name)  # raises its error
    datatype = item.datatype
    parameters = item.parameters
    return Tensor(name, datatype, shape, binary.from_raw(data, datatype, shape, name),
                  decode_parameters(parameters) if parameters else None)


def _typed_input(item) -> Tensor:
    name = item.name
    if not name:
        raise InvalidInput("each input needs a 'name'")
    datatype = item.datatype
    dtype = to_numpy(datatype)
    shape = decode_shape(list(item.shape), name)
    values = getattr(item.contents, CONTENTS_FIELD[datatype])
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = list(values)
    else:
        try:
            array = np.array(values, dtype=dtype)
        except (OverflowError, ValueError) as exc:
            raise InvalidInput(f"input '{name}': data does not fit {datatype}: {exc}") from None
    return Tensor(name, datatype, shape, reshape(array, shape, name),
                  decode_parameters(item.parameters))


def decode_parameters(parameters) -> dict[str, Any] | None:
    if not parameters:
        return None
    return {key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
            for key, value in parameters.items()}


def encode_parameters(target, parameters: dict[str, Any]) -> None:
    for key, value in parameters.items():
        param = target[key]
        if isinstance(value, (bool, np.bool_)):
            param.bool_param = bool(value)
        elif isinstance(value, (int, np.integer)):
            value = int(value)
            if value >= 1 << 63:
                param.uint64_param = value
            else:
                param.int64_param = value
        elif isinstance(value, (float, np.floating)):
            param.double_param = float(value)
        elif isinstance(value, str):
            param.string_param = value
        else:  # lists, objects, None: as JSON text
            param.string_param = orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def encode_response(response: InferResponse) -> pb.ModelInferResponse:
    message = pb.ModelInferResponse(model_name=response.model_name,
                                    model_version=response.model_version or "")
    if response.id:
        message.id = response.id
    if response.parameters:
        encode_parameters(message.parameters, response.parameters)
    outputs = message.outputs
    raw = message.raw_output_contents
    for tensor in response.outputs:
        # Field by field: cheaper than keyword construction in the upb runtime.
        output = outputs.add()
        output.name = tensor.name
        output.datatype = tensor.datatype
        output.shape.extend(tensor.data.shape)
        if tensor.parameters:
            encode_parameters(output.parameters, tensor.parameters)
        raw.append(binary.to_raw(tensor))
    return message


def metadata_response(metadata: dict) -> pb.ModelMetadataResponse:
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[tensor(**spec) for spec in metadata["inputs"]],
        outputs=[tensor(**spec) for spec in metadata["outputs"]],
    )
