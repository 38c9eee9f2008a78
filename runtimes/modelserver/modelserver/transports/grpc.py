"""gRPC transport: the Open Inference Protocol's `inference.GRPCInferenceService`, with Triton's
model configuration, statistics and repository rpcs, plus gRPC health checking and server
reflection (`grpc.reflection.v1`, which current grpcurl and Postman ask for first, and
`v1alpha`).

It runs on grpc.aio in the worker's own event loop, beside the REST server, and calls the same data
plane as REST, so both transports share models, batching, limits, errors and the recording of
every call. Each worker
process starts its own server after it is spawned; several workers share the port with
SO_REUSEPORT, as they share the HTTP port."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import unquote

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from ..core.access import FORWARDING_HEADERS, Caller
from ..core.call import GRPC, Call
from ..core.dataplane import DataPlane
from ..errors import ModelNotReady, ServingError
from ..model import Model
from ..ops.tracing import carrier
from ..protocol import v2grpc
from ..protocol.proto import grpc_service_pb2 as pb
from ..protocol.proto.grpc_service_pb2_grpc import (
    GRPCInferenceServiceServicer,
    add_GRPCInferenceServiceServicer_to_server,
)
from .tls import TlsFiles

log = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
HEALTH_POLL_SECONDS = 0.5

# The REST status of an error, as a gRPC status code.
STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
    500: grpc.StatusCode.INTERNAL,
}


def status_code(status: int) -> grpc.StatusCode:
    return STATUS_CODES.get(status, grpc.StatusCode.INTERNAL)


def _rpc(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Each call is a data-plane Call, recorded when it ends; errors become status codes with
    REST's messages."""
    path = f"/{SERVICE}/{method.__name__}"

    @wraps(method)
    async def handler(self: InferenceServicer, request, context):
        call = Call(GRPC, "GRPC", path)
        try:
            reply = await method(self, request, context, call)
        except ServingError as exc:
            call.status = exc.status
            code, message = status_code(exc.status), exc.message
        except Exception:
            log.exception("unhandled error in %s", path)
            call.status = 500
            code, message = grpc.StatusCode.INTERNAL, "internal server error"
        else:
            self.dataplane.record(call)
            return reply
        # Recorded before the error goes out: once the client has it, the call has happened.
        self.dataplane.record(call)
        await context.abort(code, message)

    return handler


class GrpcCodec:
    """A ModelInferRequest to the data plane's types, and the response to a ModelInferResponse."""

    __slots__ = ("message",)

    def __init__(self, message: pb.ModelInferRequest):
        self.message = message

    def decode(self, model: Model):
        return v2grpc.decode_request(self.message)

    def encode(self, response) -> pb.ModelInferResponse:
        return v2grpc.encode_response(response)


class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane):
        self.dataplane = dataplane

    # -- health and metadata --------------------------------------------------------------------
    @_rpc
    async def ServerLive(self, request, context, call):
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @_rpc
    async def ServerReady(self, request, context, call):
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @_rpc
    async def ModelReady(self, request, context, call):
        try:
            ready = self.dataplane.model_ready(request.name, request.version or None)
        except ModelNotReady:  # known, but unloaded or failed: not ready rather than an error
            ready = False
        return pb.ModelReadyResponse(ready=ready)

    @_rpc
    async def ServerMetadata(self, request, context, call):
        return pb.ServerMetadataResponse(**self.dataplane.server_metadata())

    @_rpc
    async def ModelMetadata(self, request, context, call):
        metadata = self.dataplane.model_metadata(request.name, request.version or None)
        return v2grpc.metadata_response(metadata)

    @_rpc
    async def ModelConfig(self, request, context, call):
        config = self.dataplane.model_config(request.name, request.version or None)
        return pb.ModelConfigResponse(config=json_format.ParseDict(config, pb.ModelConfig()))

    @_rpc
    async def ModelStatistics(self, request, context, call):
        found = self.dataplane.statistics(request.name or None, request.version or None)
        return json_format.ParseDict(found, pb.ModelStatisticsResponse(),
                                     ignore_unknown_fields=True)

    # -- model repository -----------------------------------------------------------------------
    @_rpc
    async def RepositoryIndex(self, request, context, call):
        entries = await self.dataplane.repository_index(_caller(context), request.ready)
        index = pb.RepositoryIndexResponse.ModelIndex
        return pb.RepositoryIndexResponse(models=[index(**entry) for entry in entries])

    @_rpc
    async def RepositoryModelLoad(self, request, context, call):
        parameters = _repository_parameters(request.parameters)
        await self.dataplane.load_model(request.model_name, parameters, _caller(context))
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(self, request, context, call):
        await self.dataplane.unload_model(request.model_name, _caller(context))
        return pb.RepositoryModelUnloadResponse()

    # -- inference ------------------------------------------------------------------------------
    @_rpc
    async def ModelInfer(self, request: pb.ModelInferRequest, context, call):
        if self.dataplane.tracing:
            call.trace = carrier(context.invocation_metadata() or ())
        return await self.dataplane.infer(call, request.model_name, request.model_version or None,
                                          GrpcCodec(request))


def _caller(context) -> Caller:
    """The peer's address from gRPC's `ipv4:1.2.3.4:5678` or `ipv6:[::1]:5678` (brackets
    percent-encoded by some versions), and the `authorization` metadata."""
    kind, _, address = unquote(context.peer() or "").partition(":")
    host = address.rpartition(":")[0].strip("[]") if kind in ("ipv4", "ipv6") else None
    metadata = context.invocation_metadata() or ()
    authorization = next((value for key, value in metadata if key == "authorization"), None)
    forwarded = any(key in FORWARDING_HEADERS for key, _ in metadata)
    return Caller(host, authorization, forwarded)


def _repository_parameters(parameters) -> dict[str, Any] | None:
    if not parameters:
        return None
    return {key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
            for key, value in parameters.items()}


class HealthServicer(health_pb2_grpc.HealthServicer):
    """gRPC health checking: the server (service "") and the inference service are SERVING
    exactly when the data plane is ready (every model loaded, not draining). Check asks the
    data plane; Watch looks again every HEALTH_POLL_SECONDS and sends changes, and ends when
    the server stops, so a watcher never holds up a shutdown."""

    SERVICES = ("", SERVICE)

    def __init__(self, dataplane: DataPlane):
        self.dataplane = dataplane
        self.stopping = asyncio.Event()

    def status(self, service: str) -> int:
        if service not in self.SERVICES:
            return health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        if self.dataplane.ready() and not self.stopping.is_set():
            return health_pb2.HealthCheckResponse.SERVING
        return health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request, context):
        if request.service not in self.SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=self.status(request.service))

    async def Watch(self, request, context):
        sent = None
        while True:
            status = self.status(request.service)
            if status != sent:
                await context.write(health_pb2.HealthCheckResponse(status=status))
                sent = status
            if self.stopping.is_set():
                return
            try:
                await asyncio.wait_for(self.stopping.wait(), HEALTH_POLL_SECONDS)
            except TimeoutError:
                pass


# grpc.reflection.v1 is v1alpha under another package name, message for message and field for
# field, so one servicer answers both; grpcio-reflection ships only v1alpha's modules.
REFLECTION_V1 = "grpc.reflection.v1"
REFLECTION_V1_SERVICE = f"{REFLECTION_V1}.ServerReflection"


def _reflection_v1_pool() -> descriptor_pool.DescriptorPool:
    """A pool holding grpc.reflection.v1's descriptors, made from v1alpha's, so that clients
    can describe the v1 service too."""
    alpha = f".{reflection_pb2.DESCRIPTOR.package}."
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = REFLECTION_V1
    proto.ClearField("options")
    for field in (f for message in proto.message_type for f in message.field if f.type_name):
        field.type_name = field.type_name.replace(alpha, f".{REFLECTION_V1}.")
    for method in (m for service in proto.service for m in service.method):
        method.input_type = method.input_type.replace(alpha, f".{REFLECTION_V1}.")
        method.output_type = method.output_type.replace(alpha, f".{REFLECTION_V1}.")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool


def _enable_reflection(server: aio.Server, services: tuple[str, ...]) -> None:
    """Both reflection services, v1 and v1alpha, over this server's descriptors."""
    names = (*services, reflection.SERVICE_NAME, REFLECTION_V1_SERVICE)
    servicer = reflection.aio.ReflectionServicer(names, pool=_ReflectionPool())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        REFLECTION_V1_SERVICE, {"ServerReflectionInfo": v1}),))


class _ReflectionPool:
    """Reflection over this server's descriptors (kept in a pool of their own, so that clients
    declaring the same `inference.*` messages can share a process with this package), the
    default pool's, where the health and v1alpha reflection services live, and v1
    reflection's."""

    def __init__(self) -> None:
        self.pools = (pb.DESCRIPTOR.pool, descriptor_pool.Default(), _reflection_v1_pool())

    def _first(self, method: str, *args):
        for pool in self.pools:
            try:
                return getattr(pool, method)(*args)
            except KeyError:
                continue
        raise KeyError(args[0])

    def FindFileByName(self, name):
        return self._first("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol):
        return self._first("FindFileContainingSymbol", symbol)

    def FindMessageTypeByName(self, name):
        return self._first("FindMessageTypeByName", name)

    def FindExtensionByNumber(self, message, number):
        return message.file.pool.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message):
        return message.file.pool.FindAllExtensions(message)


class GrpcServer:
    def __init__(self, server: aio.Server, health: HealthServicer, address: str):
        self.server = server
        self.health = health
        self.address = address

    async def stop(self, grace: float) -> None:
        """NOT_SERVING at once, then in-flight calls get `grace` seconds to finish."""
        self.health.stopping.set()
        await self.server.stop(grace)


def address_of(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(dataplane: DataPlane, host: str, port: int, *, max_message_bytes: int,
                max_calls: int, idle_seconds: float, reuse_port: bool = False,
                tls: TlsFiles | None = None) -> GrpcServer:
    """Serve gRPC on `host:port` in the running event loop, over TLS with `tls`: at most
    `max_calls` calls at once (more are RESOURCE_EXHAUSTED), a connection idle for
    `idle_seconds` closed, as REST bounds its connections."""
    server = aio.server(maximum_concurrent_rpcs=max_calls, options=[
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_concurrent_streams", max_calls),
        ("grpc.max_connection_idle_ms", int(idle_seconds * 1000)),
        # Without several workers, a port already taken is an error, not a silent share.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ])
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(dataplane), server)
    health = HealthServicer(dataplane)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    health_service = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    _enable_reflection(server, (SERVICE, health_service))
    address = address_of(host, port)
    try:
        if tls is None:
            bound = server.add_insecure_port(address)
        else:
            bound = server.add_secure_port(address, tls.grpc_credentials())
    except RuntimeError as exc:
        raise OSError(f"gRPC cannot listen on {address}: {exc}") from None
    if not bound:
        raise OSError(f"gRPC cannot listen on {address}")
    await server.start()
    return GrpcServer(server, health, address)
