"""REST transport: HTTP requests (read by http.py) adapted to the data plane.

No framework sits between the connection and the handlers: routing is a dict lookup or one
regex, and bodies go straight to orjson. A framework's per-request machinery would cost more
than the predict call of a small model. Every request becomes a `Call` that the data plane
records once the answer is sent."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

import orjson

from .. import __version__
from ..core.access import FORWARDING_HEADERS, Caller
from ..core.call import Call
from ..core.dataplane import DataPlane
from ..errors import InvalidInput, MethodNotAllowed, NotFound, ServingError, Unavailable
from ..model import Model
from ..ops.metrics import Metrics
from ..ops.tracing import carrier
from ..protocol import binary, v2json
from ..types import InferResponse
from .http import Request

log = logging.getLogger(__name__)

# A handler answers (status, body), or (status, body, headers) for anything but JSON.
Reply = tuple[int, bytes] | tuple[int, bytes, list[tuple[bytes, bytes]]]
Handler = Callable[..., Awaitable[Reply]]
JSON_HEADERS = [(b"content-type", b"application/json")]

_V1_MODEL = re.compile(r"/v1/models/([^/:]+)(?::(predict))?")
# TensorFlow Serving's paths beside it: a version or a label, and its other verbs. Tried only
# when the plain path above does not match, so that `/v1/models/{m}:predict` costs no more.
_V1_MODEL_AT = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?"
                          r"(?::(predict|classify|regress)|/(metadata))?")
_V2_MODEL = re.compile(
    r"/v2/models/([^/]+)(?:/versions/([^/]+))?(?:/(ready|infer|config|stats))?")
_REPOSITORY_MODEL = re.compile(r"/v2/repository/models/([^/]+)/(load|unload)")


def _ok(payload: Any) -> tuple[int, bytes]:
    return 200, v2json.dumps(payload)


@cache
def openapi_document() -> bytes:
    """The REST API's OpenAPI document, kept beside this module, with this server's version."""
    spec = orjson.loads(resources.files(__package__).joinpath("openapi.json").read_bytes())
    spec["info"]["version"] = __version__
    return orjson.dumps(spec)


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("the request has no body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None


# -- codecs: a request's body to the data plane's types, and its response back ------------------
class _Body:
    """A request body as sent: decompressed (Content-Encoding) when decoded."""

    __slots__ = ("body", "headers", "limit")

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]], limit: int):
        self.body = body
        self.headers = headers
        self.limit = limit

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def content(self) -> bytes:
        encoding = self.header(binary.CONTENT_ENCODING)
        if encoding is None:
            return self.body
        return binary.decompress(self.body, encoding, self.limit)


class V1Codec(_Body):
    """KServe v1 (or the model's own v1 dialect): JSON in, JSON out."""

    __slots__ = ("model", "parsed")

    def decode(self, model: Model):
        self.model = model
        self.parsed = parse_json(self.content())
        return model.decode_v1(self.parsed)

    def encode(self, response: InferResponse) -> Reply:
        return _ok(self.model.encode_v1(response, self.parsed))


class V1VerbCodec(V1Codec):
    """A v1 verb other than `predict`, for models whose v1 dialect has it (TensorFlow
    Serving's `classify` and `regress`)."""

    __slots__ = ("verb",)

    def __init__(self, body: bytes, headers: list[tuple[bytes, bytes]], limit: int, verb: str):
        super().__init__(body, headers, limit)
        self.verb = verb

    def decode(self, model: Model):
        self.model = model
        self.parsed = parse_json(self.content())
        return model.decode_v1(self.parsed, self.verb)

    def encode(self, response: InferResponse) -> Reply:
        return _ok(self.model.encode_v1(response, self.parsed, self.verb))


class V2Codec(_Body):
    """The Open Inference Protocol: JSON, or JSON and raw tensors (binary tensor extension)."""

    __slots__ = ("raw_outputs",)

    def decode(self, model: Model):
        header_length = self.header(binary.HEADER_LENGTH)
        body = self.content()
        if header_length is None:
            request = v2json.decode_body(body)
        else:
            request = binary.decode_request(body, header_length)
        self.raw_outputs = binary.binary_outputs(request)
        return request

    def encode(self, response: InferResponse) -> Reply:
        if self.raw_outputs is None:
            return 200, v2json.encode_response(response)
        payload, json_size = binary.encode_response(response, self.raw_outputs)
        return 200, payload, [(b"content-type", binary.OCTET_STREAM),
                              (binary.HEADER_LENGTH, b"%d" % json_size)]


class RestApp:
    def __init__(self, dataplane: DataPlane, metrics: Metrics,
                 max_request_bytes: int = 256 * 1024 * 1024):
        self.dataplane = dataplane
        self.metrics_store = metrics
        self.max_request_bytes = max_request_bytes  # also the bound of a decompressed body
        # Fixed paths: path -> {method: handler}.
        self.static: dict[str, dict[str, Handler]] = {
            "/": {"GET": self.root},
            "/v1/models": {"GET": self.v1_list},
            "/v2": {"GET": self.v2_metadata},
            "/v2/health/live": {"GET": self.v2_live},
            "/v2/health/ready": {"GET": self.v2_ready},
            "/v2/models/stats": {"GET": self.all_stats},
            "/v2/repository/index": {"POST": self.repository_index},
            "/metrics": {"GET": self.metrics},
            "/openapi.json": {"GET": self.openapi},
        }

    async def handle(self, request: Request) -> None:
        path, method = request.path, request.method
        call = Call(path[1:3], method, path, request.started)  # v1/v2: inference protocols
        headers = JSON_HEADERS
        try:
            reply = await self.dispatch(request, call)
            status, payload = reply[0], reply[1]
            if len(reply) > 2:
                headers = reply[2]
        except ServingError as exc:
            call.status = status = exc.status
            payload = error_body(exc.message)
            if exc.headers:
                headers = [*headers, *exc.headers]
        except Exception:
            log.exception("unhandled error on %s %s", method, path)
            call.status = status = 500
            payload = error_body("internal server error")
        request.respond(status, payload, headers)
        self.dataplane.record(call)

    async def dispatch(self, request: Request, call: Call) -> Reply:
        path, method = request.path, request.method
        methods = self.static.get(path)
        if methods is not None:
            return await _pick(methods, method)(request)
        if self.dataplane.tracing:
            call.trace = carrier(request.headers)
        if match := _V2_MODEL.fullmatch(path):
            name, version, action = match.groups()
            if action == "infer":
                _allow(method, "POST")
                codec = V2Codec(request.body, request.headers, self.max_request_bytes)
                return await self.dataplane.infer(call, name, version, codec)
            _allow(method, "GET")
            if action == "ready":
                return self.v2_model_ready(name, version)
            if action == "config":
                return _ok(self.dataplane.model_config(name, version))
            if action == "stats":
                return _ok(self.dataplane.statistics(name, version))
            return _ok(self.dataplane.model_metadata(name, version))
        if match := _REPOSITORY_MODEL.fullmatch(path):
            _allow(method, "POST")
            return await self.repository_action(request, *match.groups())
        if match := _V1_MODEL.fullmatch(path):
            name, verb = match.groups()
            return await self.v1_model(request, call, name, None, verb, None)
        if match := _V1_MODEL_AT.fullmatch(path):
            # The core serves one version of a model, so a label can only name that one.
            name, version, _label, verb, resource = match.groups()
            return await self.v1_model(request, call, name, version, verb, resource)
        return await self.custom_route(request, call)

    async def v1_model(self, request: Request, call: Call, name: str, version: str | None,
                       verb: str | None, resource: str | None) -> Reply:
        """KServe v1 and TensorFlow Serving's REST API: `POST :predict` (and `:classify`,
        `:regress` where the model answers them), `GET` the model's status or its `metadata`."""
        if verb is not None:
            _allow(request.method, "POST")
            if verb == "predict":
                codec = V1Codec(request.body, request.headers, self.max_request_bytes)
            else:
                codec = V1VerbCodec(request.body, request.headers, self.max_request_bytes, verb)
            return await self.dataplane.infer(call, name, version, codec)
        _allow(request.method, "GET")
        if resource == "metadata":
            return _ok(self.dataplane.v1_metadata(name, version))
        return _ok(self.dataplane.v1_model(name, version))

    async def custom_route(self, request: Request, call: Call) -> Reply:
        """A route a served model declares (MLflow's /invocations, say)."""
        path, method = request.path, request.method
        call.protocol = path
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
            reply = await self.dataplane.route(call, method, path, request.body, headers)
        except ServingError as exc:
            render = self.dataplane.route_error(method, path)
            if render is None:
                raise
            call.status = exc.status
            reply = render(exc)
        if reply is None:
            raise NotFound(f"no route for {path}")
        status, payload, content_type = reply
        call.status = status
        return status, payload, [(b"content-type", content_type.encode())]

    # -- v1 -------------------------------------------------------------------------------------
    async def root(self, request: Request) -> Reply:
        return _ok({"status": "alive"})

    async def v1_list(self, request: Request) -> Reply:
        return _ok({"models": self.dataplane.repository.names()})

    # -- v2 -------------------------------------------------------------------------------------
    async def v2_metadata(self, request: Request) -> Reply:
        return _ok(self.dataplane.server_metadata())

    async def v2_live(self, request: Request) -> Reply:
        return _ok({"live": self.dataplane.live()})

    async def v2_ready(self, request: Request) -> Reply:
        if not self.dataplane.ready():
            raise Unavailable("the server is not ready: not every model has loaded")
        return _ok({"ready": True})

    def v2_model_ready(self, name: str, version: str | None) -> Reply:
        if not self.dataplane.model_ready(name, version):
            raise Unavailable(f"model '{name}' is not ready")
        return _ok({"name": name, "ready": True})

    async def openapi(self, request: Request) -> Reply:
        return 200, openapi_document()

    async def all_stats(self, request: Request) -> Reply:
        return _ok(self.dataplane.statistics())

    async def metrics(self, request: Request) -> Reply:
        body, content_type = self.metrics_store.exposition()
        return 200, body, [(b"content-type", content_type.encode())]

    # -- model repository extension ------------------------------------------------------------
    async def repository_index(self, request: Request) -> Reply:
        body = _optional_json(request.body)
        ready_only = bool(body.get("ready"))
        return _ok(await self.dataplane.repository_index(_caller(request), ready_only))

    async def repository_action(self, request: Request, name: str, action: str) -> Reply:
        body = _optional_json(request.body)
        parameters = body.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be an object")
        if action == "load":
            await self.dataplane.load_model(name, parameters, _caller(request))
        else:
            await self.dataplane.unload_model(name, _caller(request))
        return _ok({})


_FORWARDING = tuple(name.encode() for name in FORWARDING_HEADERS)


def _caller(request: Request) -> Caller:
    peer = request.peer
    forwarded = any(request.header(name) is not None for name in _FORWARDING)
    return Caller(peer[0] if peer else None, request.header(b"authorization"), forwarded)


def _optional_json(body: bytes) -> dict:
    """Repository calls may come with no body at all."""
    parsed = parse_json(body) if body.strip() else {}
    if not isinstance(parsed, dict):
        raise InvalidInput("the request body must be a JSON object")
    return parsed


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise MethodNotAllowed(f"method {method} not allowed; use {allowed}")


def _pick(methods: dict[str, Handler], method: str) -> Handler:
    handler = methods.get(method)
    if handler is None:
        raise MethodNotAllowed(f"method {method} not allowed; use {', '.join(methods)}")
    return handler
