"""Process model: parse flags, build models, run one or more server processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from .args import build_parser, parse_args
from .ops.heap import tune_malloc
from .ops.logs import access_log, configure_logging
from .runtime.registry import can_any_load
from .ops.cpus import configure_threads
from .core.dataplane import DataPlane, Limits
from .transports.httpproto import OneWriteHttpToolsProtocol
from .model import Model
from .core.repository import SETTINGS_FILE, ModelRepository, apply_settings, latest_version
from .transports.rest import RestApp

log = logging.getLogger(__name__)


@dataclass
class Serving:
    """What a worker serves: given models, and/or a repository folder of models to load."""

    models: list[Model]
    root: Path | None = None
    default_class: type[Model] | None = None


class ModelServer:
    """Serves models over REST on `http_port`; with `workers > 1`, in that many processes.

    `models` are served as given (loaded first if not ready). With `root`, every model folder
    in it is loaded too, and the repository API can load and unload more at run time."""

    def __init__(self, args):
        self.args = args
        configure_logging(args.log_level, args.log_format, args.access_log)

    def start(self, models: list[Model] = (), root: Path | None = None,
              default_class: type[Model] | None = None) -> None:
        threads = configure_threads(self.args.workers)  # before any worker or model starts
        log.info("%d worker(s), %d thread(s) each", self.args.workers, threads)
        for model in models:
            apply_settings(model, flag_settings(self.args))
        serving = Serving(list(models), root, default_class)
        if self.args.workers == 1:
            sys.exit(_run_worker(self.args, serving))
        # Workers write their metrics to files that /metrics, in any worker, sums.
        with tempfile.TemporaryDirectory(prefix="modelserver-metrics-") as metrics_dir:
            os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", metrics_dir)
            sys.exit(self._run_workers(serving))

    def _run_workers(self, models: Serving) -> int:
        # Spawned, not forked: a child forked after a framework's thread pool has run deadlocks.
        context = multiprocessing.get_context("spawn")
        loaded = context.Value("i", 0)  # workers whose models have all loaded
        workers = [
            context.Process(target=_worker_main, args=(self.args, models, loaded),
                            name=f"worker-{i}")
            for i in range(self.args.workers)
        ]
        for worker in workers:
            worker.start()

        def forward(signum, _frame):
            for worker in workers:
                if worker.is_alive():
                    os.kill(worker.pid, signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        for worker in workers:
            worker.join()
        return max((w.exitcode or 0) for w in workers)


def flag_settings(args) -> dict[str, Any]:
    """Flags that override every model's settings."""
    settings = {"max_batch_size": args.max_batch_size, "max_batch_delay_ms": args.max_batch_delay_ms}
    return {key: value for key, value in settings.items() if value is not None}


def _worker_main(args, models: Serving, loaded) -> None:
    configure_logging(args.log_level, args.log_format, args.access_log)
    sys.exit(_run_worker(args, models, loaded))


def _listen(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _run_worker(args, serving: Serving, loaded=None) -> int:
    """One server process: load the models in the background while already answering probes.

    `loaded` counts the workers that have loaded everything, when there are several."""
    tune_malloc()
    repository = ModelRepository(serving.models, serving.root, serving.default_class,
                                 flag_settings(args))
    peers_ready = None if loaded is None else (lambda: loaded.value >= args.workers)
    limits = Limits(max_queue=args.max_queue_size, max_tensor_elements=args.max_tensor_elements,
                    request_timeout=args.request_timeout_seconds)
    dataplane = DataPlane(repository, peers_ready, limits)
    state: dict[str, Any] = {"exit_code": 0}
    server: uvicorn.Server

    async def load_models() -> None:
        repository.expect([model.name for model in repository.models() if not model.ready])
        if serving.root is not None and args.load_at_startup:
            names = repository.on_disk()
            repository.expect(names)
            for name in names:  # a model that fails stays UNAVAILABLE; the rest serve
                try:
                    await repository.load_from_disk(name)
                except Exception as exc:
                    log.error("model '%s' failed to load: %s", name, exc)
        for model in repository.models():
            if model.ready:
                continue
            try:
                await repository.load(model)
            except Exception as exc:
                log.error("model '%s' failed to load: %s", model.name, exc)
                log.debug("load failure", exc_info=True)
                state["exit_code"] = 1
                server.should_exit = True
                return
        if loaded is not None:
            with loaded.get_lock():
                loaded.value += 1

    async def on_startup() -> None:
        if args.enable_grpc:  # in this process's event loop, beside uvicorn
            from .transports import grpc as grpc_server

            try:
                state["grpc"] = await grpc_server.start(
                    dataplane, args.host, args.grpc_port,
                    max_message_bytes=args.grpc_max_message_bytes,
                    reuse_port=args.workers > 1)
            except Exception:
                state["exit_code"] = 1
                raise
            log.info("gRPC on %s (pid %d)", state["grpc"].address, os.getpid())
        state["loader"] = asyncio.get_running_loop().create_task(load_models())

    async def on_shutdown() -> None:
        if "grpc" in state:
            await state["grpc"].stop(args.graceful_shutdown_seconds)

    app = RestApp(dataplane, on_startup=on_startup, on_shutdown=on_shutdown,
                  max_request_bytes=args.max_request_bytes,
                  routes=runtime_routes(serving))
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http=OneWriteHttpToolsProtocol,
        lifespan="on",
        access_log=False,  # ours is structured and knows the model
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address: skip the middleware
        log_config=None,
        timeout_keep_alive=args.keep_alive_timeout,
        timeout_graceful_shutdown=args.graceful_shutdown_seconds,
    )
    server = DrainingServer(config, dataplane)
    sock = _listen(args.host, args.http_port, reuse_port=args.workers > 1)
    # uvicorn re-raises the stop signal once it has shut down; a shutdown it completed is a
    # success, so exit 0 rather than die by SIGTERM.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    log.info("REST on %s:%d (pid %d)", args.host, args.http_port, os.getpid())
    _run_uvloop(server.serve(sockets=[sock]))
    access_log.flush()
    return state["exit_code"]


def runtime_routes(serving: Serving) -> dict[str, dict]:
    """The extra REST routes (Model.routes) of the model classes this worker serves; where two
    classes claim the same path and method, the first served model's class wins."""
    classes = [type(model) for model in serving.models]
    if serving.default_class is not None:
        classes.append(serving.default_class)
    routes: dict[str, dict] = {}
    for cls in dict.fromkeys(classes):
        for path, methods in getattr(cls, "routes", {}).items():
            for method, handler in methods.items():
                routes.setdefault(path, {}).setdefault(method, handler)
    return routes


class DrainingServer(uvicorn.Server):
    """On SIGTERM, readiness turns false at once; uvicorn then stops accepting connections and
    waits up to the grace period for in-flight requests."""

    def __init__(self, config: uvicorn.Config, dataplane: DataPlane):
        super().__init__(config)
        self.dataplane = dataplane

    def handle_exit(self, sig, frame) -> None:
        self.dataplane.draining = True
        super().handle_exit(sig, frame)


def _run_uvloop(coro) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)
        return
    uvloop.run(coro)


def serve(model_class: type[Model] | None, argv: list[str] | None = None,
          prog: str = "modelserver", description: str = "") -> None:
    """Entry point of a runtime whose models are `model_class(name, model_dir)`.

    `--model_dir` holding one model serves it as `--model_name`; holding model folders (or with
    `--multi_model`, or no `model_class`) it is a repository of models."""
    parser = build_parser(prog, description)
    configure_logging(os.environ.get("LOG_LEVEL", "info"), os.environ.get("LOG_FORMAT", "text"))
    args = parse_args(parser, argv)
    server = ModelServer(args)
    fetch_model(args.model_dir)
    root = Path(args.model_dir)
    if model_class is None or args.multi_model or is_repository(root, model_class):
        server.start(root=root, default_class=model_class)
    else:
        server.start([model_class(args.model_name, args.model_dir)])


def is_repository(root: Path, model_class: type[Model]) -> bool:
    """A folder that is not one model itself, but has folders that are."""
    if model_class.can_load(root) or not root.is_dir():
        return False
    folders = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return any((p / SETTINGS_FILE).is_file() or can_any_load(latest_version(p)[0])
               for p in folders)


def fetch_model(model_dir: str) -> None:
    """With STORAGE_URI set, download it into the model directory first (KServe's contract)."""
    uri = os.environ.get("STORAGE_URI")
    if not uri:
        return
    from modelstorage import StorageError, download

    try:
        download(uri, model_dir)
    except StorageError as exc:
        log.error("could not fetch the model: %s", exc)
        sys.exit(1)
