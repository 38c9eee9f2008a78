"""The KServe SDK's inference clients against servers:
`python kserve_sdk_client.py IRIS_URL IRIS_TARGET MODELS_URL MODELS_TARGET` (REST base URL and
gRPC target of the iris example and of protocol_models.py).

Run in a process of its own: the SDK and tritonclient declare the same protobuf messages and
cannot be imported into one process. Prints one JSON object of results; an SDK error is a
result too (its type and status), so the test sees what the SDK saw."""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

IRIS = np.array([[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


def outputs(response) -> dict:
    return {o.name: {"datatype": o.datatype, "shape": list(o.shape),
                     "data": [x.decode() if isinstance(x, bytes) else x
                              for x in o.as_numpy().ravel().tolist()]}
            for o in response.outputs}


def iris_request(binary: bool, **kwargs) -> InferRequest:
    item = InferInput("input-0", list(IRIS.shape), "FP32")
    if binary:
        item.set_data_from_numpy(IRIS, binary_data=True)
    else:
        item.set_data_from_numpy(IRIS, binary_data=False)
    return InferRequest(model_name="iris", infer_inputs=[item], **kwargs)


def special_inputs() -> list[InferInput]:
    """BYTES and FP16, both in binary form (the SDK sends FP16 no other way)."""
    texts = InferInput("t", [2], "BYTES")
    texts.set_data_from_numpy(np.array([b"alpha", b"\xc3\xa9"], dtype=object), binary_data=True)
    half = InferInput("h", [2], "FP16")
    half.set_data_from_numpy(np.array([1.5, -2.0], dtype=np.float16), binary_data=True)
    return [texts, half]


async def attempt(coro):
    try:
        return await coro
    except Exception as exc:  # reported, not raised: the test decides
        return {"error": type(exc).__name__,
                "status": str(getattr(exc, "code", lambda: "")()) if hasattr(exc, "code")
                else getattr(getattr(exc, "response", None), "status_code", None),
                "message": str(exc)[:500]}


async def main(url: str, target: str, models_url: str, models_target: str) -> dict:
    results = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=30))
    results["rest_live"] = await rest.is_server_live(url)
    results["rest_ready"] = await rest.is_server_ready(url)
    results["rest_model_ready"] = await rest.is_model_ready(url, "iris")
    results["rest_json"] = outputs(await rest.infer(url, iris_request(False), model_name="iris"))
    results["rest_binary"] = outputs(await rest.infer(url, iris_request(True), model_name="iris"))
    binary_out = iris_request(True, request_outputs=[
        RequestedOutput("predict_proba", parameters={"binary_data": True})])
    response_headers: dict = {}
    results["rest_binary_out"] = outputs(await rest.infer(
        url, binary_out, model_name="iris", response_headers=response_headers))
    results["rest_binary_out_headers"] = {k.lower(): v for k, v in response_headers.items()}
    results["rest_unknown"] = await attempt(rest.infer(url, iris_request(False),
                                                      model_name="nope"))
    # KServe's own runtimes name their outputs output-0, ...: its clients ask for them so.
    results["rest_output_0"] = outputs(await rest.infer(url, iris_request(False, request_outputs=[
        RequestedOutput("output-0", parameters={"binary_data": True})]), model_name="iris"))
    results["rest_identity"] = outputs(await rest.infer(
        models_url, InferRequest(model_name="identity", infer_inputs=special_inputs(),
                                 parameters={"binary_data_output": True}),
        model_name="identity"))
    await rest.close()

    grpc_client = InferenceGRPCClient(target, retries=2, timeout=30)
    results["grpc_live"] = await grpc_client.is_server_live()
    results["grpc_ready"] = await grpc_client.is_server_ready()
    results["grpc_model_ready"] = await grpc_client.is_model_ready("iris")
    results["grpc"] = outputs(await grpc_client.infer(iris_request(True)))
    typed = InferRequest(model_name="iris", infer_inputs=[
        InferInput("input-0", list(IRIS.shape), "FP32", data=IRIS.ravel().tolist())])
    results["grpc_typed"] = outputs(await grpc_client.infer(typed))
    results["grpc_output_0"] = outputs(await grpc_client.infer(iris_request(
        True, request_outputs=[RequestedOutput("output-0"), RequestedOutput("output-1")])))
    results["grpc_unknown"] = await attempt(grpc_client.infer(
        InferRequest(model_name="nope", infer_inputs=iris_request(True).inputs)))
    await grpc_client.close()
    async with InferenceGRPCClient(models_target, retries=2, timeout=30) as models:
        results["grpc_identity"] = outputs(await models.infer(
            InferRequest(model_name="identity", infer_inputs=special_inputs())))
    return results


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(*sys.argv[1:5])), default=str))
