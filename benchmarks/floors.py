"""The floors the benchmarks compare with: what the HTTP and gRPC stacks cost with nothing behind
them. `python benchmarks/floors.py asgi PORT` serves a bare ASGI app on uvicorn (httptools,
uvloop), answering `{}` to any request; `python benchmarks/floors.py grpc PORT` a bare grpc.aio
server whose ModelInfer answers one fixed reply, on the grpcio this project runs;
`python benchmarks/floors.py both HTTP_PORT GRPC_PORT` both in one process and event loop, as a
server of ours runs REST and gRPC (`make bench-peers` runs it as its floor column)."""

from __future__ import annotations

import sys


async def asgi_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def asgi_server(port: int):
    import uvicorn  # not a dependency of the server: requirements-dev.txt has it

    return uvicorn.Server(uvicorn.Config(
        asgi_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", lifespan="off",
        access_log=False, log_level="warning"))


async def serve_grpc(port: int) -> None:
    server = await start_grpc(port)
    await server.wait_for_termination()


async def serve_both(http_port: int, grpc_port: int) -> None:
    grpc_server = await start_grpc(grpc_port)  # held: a server nobody references stops
    await asgi_server(http_port).serve()
    await grpc_server.stop(None)


async def start_grpc(port: int):
    import grpc
    from grpc import aio

    from modelserver.protocol.proto import grpc_service_pb2 as pb

    reply = pb.ModelInferResponse(model_name="iris", model_version="1")
    reply.outputs.add(name="predict", datatype="INT64", shape=[1])
    reply.raw_output_contents.append((1).to_bytes(8, "little"))
    reply = reply.SerializeToString()

    async def infer(request: bytes, context) -> bytes:
        return reply

    server = aio.server()
    handler = grpc.method_handlers_generic_handler("inference.GRPCInferenceService", {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(infer)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


def main() -> None:
    import uvloop

    kind, ports = sys.argv[1], [int(p) for p in sys.argv[2:]]
    if kind == "asgi":
        asgi_server(ports[0]).run()
    elif kind == "grpc":
        uvloop.run(serve_grpc(ports[0]))
    else:
        uvloop.run(serve_both(*ports))


if __name__ == "__main__":
    main()
