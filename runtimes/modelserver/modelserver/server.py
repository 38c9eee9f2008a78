"""Process model: parse flags, build models, run one or more server processes."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from .args import build_parser, parse_args
from .cpus import configure_threads
from .dataplane import DataPlane
from .model import Model
from .repository import ModelRepository
from .rest import RestApp

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format=LOG_FORMAT, stream=sys.stderr)


class ModelServer:
    """Serves models over REST on `http_port`; with `workers > 1`, in that many processes."""

    def __init__(self, args):
        self.args = args

    def start(self, models: list[Model]) -> None:
        threads = configure_threads(self.args.workers)  # before any worker or model starts
        log.info("%d worker(s), %d thread(s) each", self.args.workers, threads)
        for model in models:
            if self.args.max_batch_size is not None:
                model.max_batch_size = self.args.max_batch_size
            if self.args.max_batch_delay_ms is not None:
                model.max_batch_delay = self.args.max_batch_delay_ms / 1000
        if self.args.workers == 1:
            sys.exit(_run_worker(self.args, models))
        sys.exit(self._run_workers(models))

    def _run_workers(self, models: list[Model]) -> int:
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


def _worker_main(args, models: list[Model], loaded) -> None:
    configure_logging(args.log_level)
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


def _run_worker(args, models: list[Model], loaded=None) -> int:
    """One server process: load the models in the background while already answering probes.

    `loaded` counts the workers that have loaded everything, when there are several."""
    repository = ModelRepository(models)
    peers_ready = None if loaded is None else (lambda: loaded.value >= args.workers)
    dataplane = DataPlane(repository, peers_ready)
    state: dict[str, Any] = {"exit_code": 0}
    server: uvicorn.Server

    async def load_models() -> None:
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
        state["loader"] = asyncio.get_running_loop().create_task(load_models())

    app = RestApp(dataplane, on_startup=on_startup)
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_config=None,
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    sock = _listen(args.host, args.http_port, reuse_port=args.workers > 1)
    # uvicorn re-raises the stop signal once it has shut down; a shutdown it completed is a
    # success, so exit 0 rather than die by SIGTERM.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    log.info("REST on %s:%d (pid %d)", args.host, args.http_port, os.getpid())
    _run_uvloop(server.serve(sockets=[sock]))
    return state["exit_code"]


def _run_uvloop(coro) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(coro)
        return
    uvloop.run(coro)


def serve(make_model: Callable[[str, str], Model], argv: list[str] | None = None,
          prog: str = "modelserver", description: str = "") -> None:
    """Entry point of a runtime: `make_model(name, model_dir)` builds its model."""
    parser = build_parser(prog, description)
    configure_logging(os.environ.get("LOG_LEVEL", "info"))
    args = parse_args(parser, argv)
    logging.getLogger().setLevel(args.log_level.upper())
    fetch_model(args.model_dir)
    ModelServer(args).start([make_model(args.model_name, args.model_dir)])


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
