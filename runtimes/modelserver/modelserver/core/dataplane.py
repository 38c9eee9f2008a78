"""The one data plane: every transport and custom route calls into this.

For an inference request, whatever its transport, the data plane finds the model, admits the
request (queue and tensor limits), keeps its deadline and in-flight count, runs it (batched or
alone, in the model's threads), maps the model's failures to errors, and records it: the
transport only decodes, calls and encodes (through a codec it hands over), and gives the call
back to `record` once the answer is sent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from modelstorage import Refused, StorageError, download
from modelstorage.errors import scrub

from .. import __version__
from ..errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    MethodNotAllowed,
    ModelFailed,
    ServingError,
    Unavailable,
)
from ..model import Route
from ..protocol.modelconfig import model_config
from ..types import Reply
from .access import AccessPolicy, Caller, SourcePolicy
from .call import Call
from .recorder import Recorder
from .repository import ModelRepository
from .runner import Codec, Runner
from .threads import in_thread

log = logging.getLogger(__name__)

SERVER_NAME = "modelserver"
# What `GET /v2` lists, named as Triton names them.
EXTENSIONS = ["binary_tensor_data", "model_repository", "model_configuration", "statistics"]


def fetch(uri: str, folder, allow_redirect: Callable[[str], bool]) -> None:
    try:
        download(uri, folder, allow_redirect=allow_redirect)
    except Refused as exc:
        raise Forbidden(f"could not fetch {scrub(uri, uri)}: {exc}") from None
    except StorageError as exc:
        raise InvalidInput(f"could not fetch {scrub(uri, uri)}: {exc}") from None


class Peers(Protocol):
    """The other worker processes, when there are several: repository changes go to all of
    them (see modelserver/workers.py), and the index is theirs together."""

    def ready(self) -> bool: ...

    async def index(self, ready_only: bool) -> list[dict[str, str]]: ...

    async def load(self, name: str, uri: str | None) -> None: ...

    async def unload(self, name: str) -> None: ...


class DataPlane:
    def __init__(self, repository: ModelRepository, recorder: Recorder,
                 peers: Peers | None = None, *, access: AccessPolicy | None = None,
                 sources: SourcePolicy | None = None):
        self.repository = repository
        self.recorder = recorder
        # Whether transports pass the caller's trace context on (only when tracing is on).
        self.tracing = recorder.tracer is not None
        # Whether the repository folder is polled: then it, not the API, decides what serves.
        self.polled = False
        self.draining = False  # set at SIGTERM: not ready any more, in-flight work finishes
        # With several worker processes: the server is ready only once every one of them is,
        # and the repository changes in all of them at once.
        self.peers = peers
        self.access = access or AccessPolicy()  # by default: loopback callers only
        self.sources = sources or SourcePolicy()  # by default: no storage_uri at all

    # -- health and metadata --------------------------------------------------------------------
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return (not self.draining and self.repository.all_ready()
                and (self.peers is None or self.peers.ready()))

    def server_metadata(self) -> dict:
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def model_ready(self, name: str, version: str | None = None) -> bool:
        runner = self.repository.get(name, version)
        return runner.model.ready and not runner.stuck()

    def model_metadata(self, name: str, version: str | None = None) -> dict:
        model = self.repository.get(name, version).model
        return {
            "name": model.name,
            "versions": [model.version],
            "platform": model.platform,
            "inputs": [spec.as_dict() for spec in model.inputs()],
            "outputs": [spec.as_dict() for spec in model.outputs()],
        }

    def v1_model(self, name: str, version: str | None = None) -> dict:
        """`GET /v1/models/{name}`: KServe's name and readiness, and what the model's v1 dialect
        adds (TensorFlow Serving's model_version_status); 503 while it is not ready."""
        model = self.repository.get(name, version).model
        if not model.ready:
            raise Unavailable(f"model '{name}' is not ready")
        return {"name": name, "ready": True, **model.v1_status()}

    def v1_metadata(self, name: str, version: str | None = None) -> dict:
        """`GET /v1/models/{name}/metadata`, for models whose v1 dialect has it."""
        return self.repository.ready(name, version).model.v1_metadata()

    def model_config(self, name: str, version: str | None = None) -> dict:
        model = self.repository.get(name, version).model
        return model_config(model, self.model_metadata(name, version))

    def statistics(self, name: str | None = None, version: str | None = None) -> dict:
        """`{"model_stats": [...]}` for one model (404 if unknown) or every model served."""
        runners = [self.repository.get(name, version)] if name else self.repository.runners()
        return {"model_stats": [r.stats.as_dict(r.name, r.version) for r in runners]}

    # -- model repository -----------------------------------------------------------------------
    # What a caller asks: checked here (who calls, and where a load fetches from), then done in
    # this process, or with several workers in every one of them.
    async def repository_index(self, caller: Caller,
                               ready_only: bool = False) -> list[dict[str, str]]:
        self.access.check(caller)
        if self.peers is not None:
            return await self.peers.index(ready_only)
        return self.repository.index(ready_only)

    async def load_model(self, name: str, parameters: dict | None, caller: Caller) -> None:
        """The repository API's load: (re)load `<model_dir>/<name>`, first fetching
        `storage_uri` into it if given."""
        self.access.check(caller)
        self._not_polled()
        uri = (parameters or {}).get("storage_uri")
        if uri is not None:
            self.sources.check(uri)
        if self.peers is not None:
            await self.peers.load(name, uri)
        else:
            await self.apply_load(name, uri)

    async def unload_model(self, name: str, caller: Caller) -> None:
        """The repository API's unload."""
        self.access.check(caller)
        self._not_polled()
        if self.peers is not None:
            await self.peers.unload(name)
        else:
            await self.apply_unload(name)

    # What this process does, once a change is allowed (and for the models it starts with).
    async def fetch(self, name: str, uri: str) -> None:
        """Fetch `uri` into `<model_dir>/<name>`; every redirect on the way must be allowed."""
        async with self.repository.exclusive(name):
            await self._fetch(name, uri)

    async def _fetch(self, name: str, uri: str) -> None:
        folder = self.repository.folder_for_download(name)
        await in_thread(fetch, uri, folder, self.sources.allows, name=f"fetch-{name}")

    async def apply_load(self, name: str, uri: str | None = None, *,
                         fetched: bool = False) -> None:
        """Load `<model_dir>/<name>` here as it is on disk (at start, after the API asked, when
        polling finds it changed), first fetching `uri` into it unless it is `fetched` already;
        a model whose files came from `uri` knows it (`Model.fetched_from`)."""
        async with self.repository.exclusive(name):
            if uri is not None and not fetched:
                await self._fetch(name, uri)
            try:
                await self.repository.load_from_disk(name, fetched_from=uri and scrub(uri, uri))
            except ServingError:
                raise
            except Exception as exc:
                raise ModelFailed(f"failed to load model '{name}': {exc}") from None

    async def apply_unload(self, name: str) -> None:
        async with self.repository.exclusive(name):
            await self.repository.unload(name)

    async def forget(self, name: str) -> None:
        """A folder polling found gone: unload its model, if it has one, and forget it."""
        async with self.repository.exclusive(name):
            if name in self.repository.names():
                await self.repository.unload(name)
            self.repository.forget(name)

    def _not_polled(self) -> None:
        if self.polled:
            raise Conflict("this server polls its model repository (--repository_poll_seconds):"
                           " add, change or remove the model's folder instead")

    # -- inference ------------------------------------------------------------------------------
    async def infer(self, call: Call, name: str, version: str | None, codec: Codec) -> Any:
        """One inference request to model `name`: the codec decodes it for the model and
        encodes the response into what this returns."""
        call.inference = True
        call.model = name
        return await self._runner(call, name, version).infer(call, codec)

    def _runner(self, call: Call, name: str, version: str | None) -> Runner:
        repository = self.repository
        if repository.knows(name):
            call.label = name
        runner = repository.ready(name, version)
        call.runner = runner
        return runner

    async def route(self, call: Call, method: str, path: str, body: bytes,
                    headers: dict[str, str]) -> Reply | None:
        """A custom route of a served model (see `modelserver.model.route`); None when no
        model class served here has a route at `path`."""
        declared = {r.method for cls in self.repository.model_classes()
                    for (_, p), r in cls.routes().items() if p == path}
        if not declared:
            return None
        if method not in declared:
            raise MethodNotAllowed(f"method {method} not allowed; use "
                                   f"{', '.join(sorted(declared))}")
        served = [(runner, runner.model.routes()[(method, path)])
                  for runner in self.repository.runners()
                  if (method, path) in runner.model.routes()]
        if not served:
            raise Unavailable(f"no model that answers {path} is ready")
        if len(served) > 1:
            names = ", ".join(runner.name for runner, _ in served)
            raise InvalidInput(f"several models answer {path} ({names}); it serves one: use "
                               "/v2/models/<name>/infer")
        runner, route = served[0]
        call.inference = route.inference
        call.model = call.label = runner.name
        if route.inference:
            self.repository.ready(runner.name)  # 503 while it is loading or going
            call.runner = runner
        return await runner.route(call, route, body, headers)

    def route_error(self, method: str, path: str) -> Callable[[ServingError], Reply] | None:
        """The error renderer of the custom route at `path`, if it has one of its own."""
        for cls in self.repository.model_classes():
            route: Route | None = cls.routes().get((method, path))
            if route is not None:
                return route.error
        return None

    def record(self, call: Call) -> None:
        """The call is answered: record it (statistics, metrics, access log, trace)."""
        self.recorder.record(call)

    def loaded_gauges(self) -> tuple[int, int]:
        """In-flight inference requests, and models ready, for the metrics' gauges."""
        runners = self.repository.runners()
        return sum(r.inflight for r in runners), self.repository.loaded_count()
