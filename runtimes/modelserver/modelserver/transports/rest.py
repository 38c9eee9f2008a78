"""REST transport: a bare ASGI application that adapts HTTP to the data plane.

No framework sits between uvicorn and the handlers: routing is a dict lookup or one regex, and
bodies go straight to orjson. A framework's per-request machinery would cost more than the
predict call of a small model."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from functools import cache
from importlib import resources
from typing import Any

import orjson

from ..protocol import binary
from ..core import stats
from ..protocol import v2json
from ..core.dataplane import DataPlane
from ..ops.logs import access_log
from .. import __version__
from ..ops import metrics
from ..protocol.modelconfig import model_config
from ..errors import (
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServingError,
    Unavailable,
)

log = logging.getLogger(__name__)

# A handler answers (status, body), or (status, body, headers) for anything but JSON.
Reply = tuple[int, bytes] | tuple[int, bytes, list[tuple[bytes, bytes]]]
Handler = Callable[..., Awaitable[Reply]]
JSON_HEADERS = [(b"content-type", b"application/json")]
# What `GET /v2` lists, named as Triton names them.
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]

_V1_MODEL = re.compile(r"/v1/models/([^/:]+)(?::(predict))?")
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


async def read_body(receive, limit: int) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        if len(body) > limit:
            raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        return body
    chunks, size = [body], len(body)
    while message.get("more_body"):
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(body: bytes) -> Any:
    if not body:
        raise InvalidInput("the request has no body")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None


class RestApp:
    def __init__(
        self,
        dataplane: DataPlane,
        on_startup: Callable[[], Awaitable[None]] | None = None,
        on_shutdown: Callable[[], Awaitable[None]] | None = None,
        max_request_bytes: int = 256 * 1024 * 1024,
        routes: dict[str, dict[str, Handler]] | None = None,
    ):
        self.dataplane = dataplane
        self.max_request_bytes = max_request_bytes
        self.on_startup = on_startup
        self.on_shutdown = on_shutdown
        if not dataplane.extensions:
            dataplane.extensions.extend(EXTENSIONS)
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
        # A runtime's own fixed paths (Model.routes): their handlers get the body and headers.
        self.routes = {path: methods for path, methods in (routes or {}).items()
                       if path not in self.static}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    async def http(self, scope, receive, send) -> None:
        started = time.perf_counter()
        metrics.INFLIGHT.inc()
        headers = JSON_HEADERS
        try:
            reply = await self.dispatch(scope, receive)
            status, payload = reply[0], reply[1]
            if len(reply) > 2:
                headers = reply[2]
        except ServingError as exc:
            status, payload = exc.status, error_body(exc.message)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            status, payload = 500, error_body("internal server error")
        finally:
            metrics.INFLIGHT.dec()
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", b"%d" % len(payload))]})
        await send({"type": "http.response.body", "body": payload})
        self.record(scope, status, time.perf_counter() - started)

    def record(self, scope, status: int, seconds: float) -> None:
        # Only inference calls are counted per model; a 404's name is the client's, not ours.
        model = scope.get("model")
        if model is not None:
            if status == 200:
                metrics.record_request(model, scope["path"][1:3], status, seconds)
                stats.record_success(model, int(seconds * 1e9), scope.get("input_ns", -1),
                                     scope.get("output_ns", -1))
            else:
                # A label only for a model's name: a failed request's name is the client's.
                known = model in self.dataplane.repository.names()
                metrics.record_request(model if known else "", scope["path"][1:3], status,
                                       seconds)
                if known:
                    stats.record_failure(model, int(seconds * 1e9))
        access_log(scope["method"], scope["path"], model, status, seconds)

    async def dispatch(self, scope, receive) -> tuple[int, bytes]:
        path, method = scope["path"], scope["method"]
        methods = self.static.get(path)
        if methods is not None:
            return await _pick(methods, method)(receive)
        methods = self.routes.get(path)
        if methods is not None:
            handler = _pick(methods, method)
            body = await read_body(receive, self.max_request_bytes)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            return await handler(self.dataplane, body, headers)
        if match := _V2_MODEL.fullmatch(path):
            name, version, action = match.groups()
            if action == "infer":
                _allow(method, "POST")
                scope["model"] = name
                return await self.v2_infer(scope, receive, name, version)
            _allow(method, "GET")
            if action == "ready":
                return self.v2_model_ready(name, version)
            if action == "config":
                return _ok(model_config(self.dataplane, name, version))
            if action == "stats":
                return _ok(stats.statistics(self.dataplane, name, version))
            return _ok(self.dataplane.model_metadata(name, version))
        if match := _REPOSITORY_MODEL.fullmatch(path):
            _allow(method, "POST")
            return await self.repository_action(receive, *match.groups())
        if match := _V1_MODEL.fullmatch(path):
            name, action = match.groups()
            if action == "predict":
                _allow(method, "POST")
                scope["model"] = name
                return await self.v1_predict(receive, name)
            _allow(method, "GET")
            return self.v1_model_ready(name)
        raise NotFound(f"no route for {path}")

    # -- v1 -------------------------------------------------------------------------------------
    async def root(self, receive) -> tuple[int, bytes]:
        return _ok({"status": "alive"})

    async def v1_list(self, receive) -> tuple[int, bytes]:
        return _ok({"models": self.dataplane.repository.names()})

    def v1_model_ready(self, name: str) -> tuple[int, bytes]:
        if not self.dataplane.model_ready(name):
            raise Unavailable(f"model '{name}' is not ready")
        return _ok({"name": name, "ready": True})

    async def v1_predict(self, receive, name: str) -> tuple[int, bytes]:
        body = parse_json(await read_body(receive, self.max_request_bytes))
        return _ok(await self.dataplane.predict_v1(name, body))

    # -- v2 -------------------------------------------------------------------------------------
    async def v2_metadata(self, receive) -> tuple[int, bytes]:
        return _ok(self.dataplane.server_metadata())

    async def v2_live(self, receive) -> tuple[int, bytes]:
        return _ok({"live": self.dataplane.live()})

    async def v2_ready(self, receive) -> tuple[int, bytes]:
        if not self.dataplane.ready():
            raise Unavailable("the server is not ready: not every model has loaded")
        return _ok({"ready": True})

    def v2_model_ready(self, name: str, version: str | None) -> tuple[int, bytes]:
        if not self.dataplane.model_ready(name, version):
            raise Unavailable(f"model '{name}' is not ready")
        return _ok({"name": name, "ready": True})

    async def v2_infer(self, scope, receive, name: str, version: str | None) -> Reply:
        body = await read_body(receive, self.max_request_bytes)
        started = time.perf_counter()
        header_length = encoding = None
        for key, value in scope["headers"]:
            if key == binary.HEADER_LENGTH:
                header_length = value
            elif key == binary.CONTENT_ENCODING:
                encoding = value
        if encoding is not None:
            body = binary.decompress(body, encoding, self.max_request_bytes)
        if header_length is None:
            request = v2json.decode_request(parse_json(body))
        else:
            request = binary.decode_request(body, header_length)
        raw_outputs = binary.binary_outputs(request)
        decoded = time.perf_counter()
        response = await self.dataplane.infer(name, request, version)
        answered = time.perf_counter()
        if raw_outputs is None:
            reply: Reply = 200, v2json.encode_response(response)
        else:
            payload, json_size = binary.encode_response(response, raw_outputs)
            reply = 200, payload, [(b"content-type", binary.OCTET_STREAM),
                                   (binary.HEADER_LENGTH, b"%d" % json_size)]
        scope["input_ns"] = int((decoded - started) * 1e9)
        scope["output_ns"] = int((time.perf_counter() - answered) * 1e9)
        return reply

    async def openapi(self, receive) -> Reply:
        return 200, openapi_document()

    async def all_stats(self, receive) -> Reply:
        return _ok(stats.statistics(self.dataplane))

    async def metrics(self, receive) -> Reply:
        body, content_type = metrics.exposition()
        return 200, body, [(b"content-type", content_type.encode())]

    # -- model repository extension ------------------------------------------------------------
    async def repository_index(self, receive) -> tuple[int, bytes]:
        body = _optional_json(await read_body(receive, self.max_request_bytes))
        return _ok(self.dataplane.repository_index(ready_only=bool(body.get("ready"))))

    async def repository_action(self, receive, name: str, action: str) -> tuple[int, bytes]:
        body = _optional_json(await read_body(receive, self.max_request_bytes))
        parameters = body.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidInput("'parameters' must be an object")
        if action == "load":
            await self.dataplane.load_model(name, parameters)
        else:
            await self.dataplane.unload_model(name)
        return _ok({})

    # -- lifespan -------------------------------------------------------------------------------
    async def lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    if self.on_startup:
                        await self.on_startup()
                except Exception as exc:  # uvicorn logs the message and exits
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.on_shutdown:
                    await self.on_shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


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
