"""Requests built with MLServer's own codec classes (`mlserver.codecs`), sent to v2 servers:
`python mlserver_client.py OURS_URL OURS_GRPC [MLSERVER_URL MLSERVER_GRPC]`.

Runs in MLServer's virtualenv (.cache/mlserver, made by setup.sh), whose pins differ from the
project's. Prints one JSON object: for each case, each server's answer over REST and gRPC
(status, then outputs or error), each output's data decoded with MLServer's codecs."""

import json
import sys
import urllib.error
import urllib.request

import grpc
import numpy as np
import pandas as pd
from mlserver.codecs import (Base64Codec, DatetimeCodec, NumpyCodec, NumpyRequestCodec,
                             PandasCodec, StringCodec)
from mlserver.grpc import dataplane_pb2_grpc
from mlserver.grpc.converters import ModelInferRequestConverter, ModelInferResponseConverter
from mlserver.types import InferenceRequest, Parameters, RequestOutput
from mlserver_models import BLOBS, HOUSES, IRIS, IRIS_COLUMNS, WHEN

def cases() -> dict[str, tuple[str, InferenceRequest]]:
    """name -> (model, request), each request as MLServer's codecs build it."""
    iris_frame = pd.DataFrame(IRIS, columns=IRIS_COLUMNS)
    proba = PandasCodec.encode_request(iris_frame)
    proba.outputs = [RequestOutput(name="predict_proba")]
    pd_request = Parameters(content_type="pd")
    return {
        "pd, plain-array model": ("iris", PandasCodec.encode_request(iris_frame)),
        "pd, predict_proba": ("iris", proba),
        "np request": ("iris", NumpyRequestCodec.encode_request(IRIS)),
        "np input, no request type": ("iris", InferenceRequest(
            inputs=[NumpyCodec.encode_input("input-0", IRIS)])),
        # object, as pandas 2 holds text: MLServer 1.7.1's PandasCodec predates pandas 3's str
        "pd with str column": ("houses", PandasCodec.encode_request(
            HOUSES.astype({"city": object}))),
        "str and np inputs, no request type": ("houses", InferenceRequest(inputs=[
            StringCodec.encode_input("city", HOUSES["city"].tolist()),
            *[NumpyCodec.encode_input(c, HOUSES[c].to_numpy()) for c in ("floor", "area",
                                                                           "rooms")]])),
        "pd with base64 column": ("blobs", InferenceRequest(
            parameters=pd_request, inputs=[Base64Codec.encode_input("blob", BLOBS)])),
        "pd with datetime column": ("dates", InferenceRequest(
            parameters=pd_request, inputs=[DatetimeCodec.encode_input("when", WHEN)])),
    }


def decoded(outputs) -> list:
    found = []
    for output in outputs:
        kind = (output.parameters.content_type if output.parameters else None)
        values = NumpyCodec.decode_output(output) if output.datatype != "BYTES" else \
            StringCodec.decode_output(output)
        found.append({"name": output.name, "datatype": output.datatype,
                      "shape": list(output.shape), "content_type": kind,
                      "data": np.asarray(values).reshape(-1).tolist()})
    return found


def rest(url: str, model: str, request: InferenceRequest) -> dict:
    body = request.model_dump_json(exclude_none=True).encode()
    post = urllib.request.Request(f"{url}/v2/models/{model}/infer", body,
                                  {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(post, timeout=60) as reply:
            answer = json.loads(reply.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            text = json.loads(text).get("error", text)
        except ValueError:
            pass
        return {"status": err.code, "error": text[:300]}
    from mlserver.types import InferenceResponse

    return {"status": 200, "outputs": decoded(InferenceResponse(**answer).outputs)}


def over_grpc(target: str, model: str, request: InferenceRequest) -> dict:
    with grpc.insecure_channel(target) as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
        message = ModelInferRequestConverter.from_types(request.model_copy(deep=True),
                                                        model_name=model)
        try:
            reply = stub.ModelInfer(message, timeout=60)
        except grpc.RpcError as err:
            return {"status": err.code().name, "error": err.details()[:300]}
    return {"status": 200, "outputs": decoded(ModelInferResponseConverter.to_types(reply)
                                              .outputs)}


def main(argv: list[str]) -> None:
    servers = {"ours": argv[1:3]}
    if len(argv) > 3:
        servers["mlserver"] = argv[3:5]
    results = {}
    for name, (model, request) in cases().items():
        results[name] = {"model": model}
        for label, (url, target) in servers.items():
            results[name][label] = rest(url, model, request.model_copy(deep=True))
            results[name][label + " grpc"] = over_grpc(target, model, request)
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv)
