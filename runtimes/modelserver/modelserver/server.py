"""Process model: parse flags, build models, run one or more server processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .args import add_runtime_flags, build_parser, flag_settings, parse_args
from .core.access import AccessPolicy, SourcePolicy
from .core.dataplane import DataPlane
from .core.poller import Poller
from .core.recorder import Recorder
from .core.repository import ModelRepository, SettingsSources
from .core.runner import Runner
from .model import Model
from .ops.cpus import configure_threads
from .ops.heap import tune_malloc
from .ops.logs import access_log, configure_logging
from .ops.metrics import Metrics
from .ops import tracing
from .runtime.files import latest_version
from .runtime.registry import can_any_load
from .settings import SETTINGS_FILE, read_settings
from .transports.http import HttpServer, Limits
from .transports.rest import RestApp
from .transports.tls import TlsFiles
from .workers import Supervisor, WorkerPeers, Workers

log = logging.getLogger(__name__)


@dataclass
class Serving:
    """What a worker serves: given models, and/or a repository folder of models to load."""

    models: list[Model]
    root: Path | None = None
    default_class: type[Model] | None = None
    # The settings.json of a given model's folder, by model name.
    folder_settings: dict[str, dict] = field(default_factory=dict)


class ModelServer:
    """Serves models over REST on `http_port`; with `workers > 1`, in that many processes.

    `models` are served as given (loaded first if not ready). With `root`, every model folder
    in it is loaded too, and the repository API can load and unload more at run time."""

    def __init__(self, args):
        self.args = args
        configure_logging(args.log_level, args.log_format, args.access_log)

    def start(self, models: list[Model] = (), root: Path | None = None,
              default_class: type[Model] | None = None,
              folder_settings: dict[str, dict] | None = None) -> None:
        threads = configure_threads(self.args.workers)  # before any worker or model starts
        _open_files_for(self.args.max_connections)
        log.info("%d worker(s), %d thread(s) each", self.args.workers, threads)
        serving = Serving(list(models), root, default_class, folder_settings or {})
        if self.args.workers == 1:
            sys.exit(_run_worker(self.args, serving, threads))
        with tempfile.TemporaryDirectory(prefix="modelserver-metrics-") as metrics_dir:
            supervisor = Supervisor(self.args.workers, _worker_main,
                                    (self.args, serving, threads), Path(metrics_dir),
                                    self.args.graceful_shutdown_seconds)
            sys.exit(supervisor.run())


def _open_files_for(connections: int) -> None:
    """Raise this process's open-file limit to what the system allows, so that
    `--max_connections` (plus the model's own files) is reached before the limit is."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (ImportError, ValueError, OSError):
        return
    if soft != resource.RLIM_INFINITY and soft < connections + 256:
        log.warning("the open-file limit (%d) is close to --max_connections (%d): connections "
                    "past it will be refused", soft, connections)


def _worker_main(args, serving: Serving, threads: int, shared: Workers) -> None:
    configure_logging(args.log_level, args.log_format, args.access_log)
    sys.exit(_run_worker(args, serving, threads, shared))


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


def _run_worker(args, serving: Serving, threads: int, shared: Workers | None = None) -> int:
    """One server process: load the models in the background while already answering probes."""
    tune_malloc()
    dataplane: DataPlane
    metrics = Metrics(lambda: dataplane.loaded_gauges(),
                      shared.metrics if shared is not None else None)

    def runner(model: Model) -> Runner:
        return Runner(model, metrics.model(model.name), args.max_tensor_elements)

    sources = SettingsSources(flag_settings(args), {"threads": threads})
    try:
        repository = ModelRepository(runner, serving.models, serving.root,
                                     serving.default_class, sources, serving.folder_settings)
    except ValueError as exc:  # a given model's settings are wrong
        log.error("%s", exc)
        return 1
    tracer = tracing.Tracer(args.prog) if tracing.wanted(args.enable_tracing) else None
    dataplane = DataPlane(repository, Recorder(metrics, access_log, tracer),
                          access=AccessPolicy(args.admin_token_file),
                          sources=SourcePolicy(args.allowed_storage_uris))
    sock = _listen(args.host, args.http_port, reuse_port=args.workers > 1)
    code = _run_loop(_serve(args, serving, dataplane, metrics, sock, shared))
    if tracer is not None:
        tracer.shutdown()
    access_log.flush()
    return code


async def _serve(args, serving: Serving, dataplane: DataPlane, metrics: Metrics,
                 sock: socket.socket, shared: Workers | None) -> int:
    """Serve until SIGTERM (or a model given to the server fails to load), then drain: readiness
    turns false at once, the listeners close, and requests in progress get the grace period."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if shared is not None:  # repository changes go through the parent, to every worker
        peers = dataplane.peers = WorkerPeers(shared, dataplane)
        link = loop.create_task(peers.serve())
        link.add_done_callback(lambda _: _parent_gone(stop))
    tls = TlsFiles.from_args(args)
    grpc_server = None
    if args.enable_grpc:  # in this process's event loop, beside REST
        from .transports import grpc

        try:
            # Files of its own: gRPC looks at them from its own threads.
            grpc_server = await grpc.start(dataplane, args.host, args.grpc_port,
                                           max_message_bytes=args.grpc_max_message_bytes,
                                           max_calls=args.max_connections,
                                           idle_seconds=args.keep_alive_timeout,
                                           reuse_port=args.workers > 1,
                                           tls=TlsFiles.from_args(args))
        except OSError as exc:
            log.error("%s", exc)
            return 1
        log.info("gRPC%s on %s (pid %d)", " (TLS)" if tls else "", grpc_server.address,
                 os.getpid())
    poller = None
    if serving.root is not None and args.repository_poll_seconds > 0:
        poller = Poller(dataplane, args.repository_poll_seconds)
        dataplane.polled = True
    startup = startup_models(args, serving, dataplane.repository, shared)
    loader = loop.create_task(_load_models(startup, dataplane, poller))
    loader.add_done_callback(lambda task: task.cancelled() or task.result() or stop.set())
    http = HttpServer(RestApp(dataplane, metrics, args.max_request_bytes).handle, Limits(
        max_header_bytes=args.max_header_bytes, max_body_bytes=args.max_request_bytes,
        read_timeout=args.request_read_timeout_seconds, keep_alive=args.keep_alive_timeout,
        max_connections=args.max_connections))
    await http.start(sock, ssl=tls.rest_context() if tls else None)
    log.info("REST%s on %s:%d (pid %d)", " (TLS)" if tls else "", args.host, args.http_port,
             os.getpid())
    await stop.wait()
    failed = loader.done() and not loader.cancelled() and loader.result() is False
    dataplane.draining = True
    grace = args.graceful_shutdown_seconds
    log.info("stopping: requests in progress get %gs to finish (pid %d)", grace, os.getpid())
    await asyncio.gather(http.shutdown(grace),
                         grpc_server.stop(grace) if grpc_server else asyncio.sleep(0))
    loader.cancel()
    if poller is not None and poller.task is not None:
        poller.task.cancel()
    if shared is not None:
        metrics.write_snapshot()  # this worker's last counts stay in the sum
    log.info("stopped (pid %d)", os.getpid())
    return 1 if failed else 0


def _parent_gone(stop: asyncio.Event) -> None:
    if not stop.is_set():
        log.error("the parent process has gone: stopping (pid %d)", os.getpid())
        stop.set()


def startup_models(args, serving: Serving, repository: ModelRepository,
                   shared: Workers | None) -> dict[str, str | None]:
    """The repository's models a worker loads at start, each with the storage_uri its files
    came from: every folder (with `--load_at_startup`), then the changes the repository API
    made before this worker started (a worker that replaces one that died). Readiness waits
    for all of them."""
    names: dict[str, str | None] = {}
    if serving.root is not None and args.load_at_startup:
        names = dict.fromkeys(repository.on_disk())
    for name, (loaded, source) in (shared.journal if shared is not None else {}).items():
        if loaded:
            names[name] = source
        else:
            names.pop(name, None)
            repository.unloaded(name)
    repository.expect(list(names))
    return names


async def _load_models(startup: dict[str, str | None], dataplane: DataPlane,
                       poller: Poller | None) -> bool:
    """Load the repository's models (one that fails stays UNAVAILABLE) and the given models
    (one that fails stops the server), then start polling if asked; False when a given model
    failed."""
    repository = dataplane.repository
    for name, source in startup.items():
        try:
            await dataplane.apply_load(name, source, fetched=True)
        except Exception as exc:
            log.error("model '%s' failed to load: %s", name, str(exc))
    try:
        await repository.load_given()
    except Exception as exc:
        log.error("%s", exc)
        log.debug("load failure", exc_info=True)
        return False
    if dataplane.peers is not None:
        dataplane.peers.loaded()
    if poller is not None:
        poller.start()
    return True


def _run_loop(coro):
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


def serve(model_class: type[Model] | None, argv: list[str] | None = None,
          prog: str = "modelserver", description: str = "") -> None:
    """Entry point of a runtime whose models are `model_class(name, model_dir)`.

    `--model_dir` holding one model serves it as `--model_name`; holding model folders (or with
    `--multi_model`, or no `model_class`) it is a repository of models."""
    parser = build_parser(prog, description)
    if model_class is not None:
        add_runtime_flags(parser, prog, model_class.flags)
    configure_logging(os.environ.get("LOG_LEVEL", "info"), os.environ.get("LOG_FORMAT", "text"))
    args = parse_args(parser, argv)
    server = ModelServer(args)
    root = fetch_model(args.model_dir)
    if model_class is None or args.multi_model or is_repository(root, model_class):
        server.start(root=root, default_class=model_class)
    else:
        model = single_model(model_class, args.model_name, root)
        server.start([model], folder_settings={model.name: read_settings(root)})


def is_repository(root: Path, model_class: type[Model]) -> bool:
    """A folder that is not one model itself, but has folders that are. Numbered folders are
    versions of the one model (Triton's and TF Serving's layout), not models named 1, 2, ..."""
    if model_class.can_load(root) or not root.is_dir():
        return False
    folders = [p for p in root.iterdir()
               if p.is_dir() and not p.name.startswith(".") and not p.name.isdigit()]
    return any((p / SETTINGS_FILE).is_file() or can_any_load(latest_version(p)[0])
               for p in folders)


def single_model(model_class: type[Model], name: str, root: Path) -> Model:
    """The model in `root`, or else in its highest numbered version folder."""
    if model_class.can_load(root) or not root.is_dir():
        folder, version = root, None
    else:
        folder, version = latest_version(root)
    model = model_class(name, str(folder))
    if version is not None:
        model.version = version
    return model


def fetch_model(model_dir: str) -> Path:
    """The local folder to serve from. With STORAGE_URI set, it is downloaded into the model
    directory first (KServe's contract); a `--model_dir` that is itself a URI (as KServe's own
    servers take one) is downloaded into a temporary folder."""
    uri, folder = os.environ.get("STORAGE_URI"), Path(model_dir)
    if not uri and is_uri(model_dir):
        uri, folder = model_dir, Path(tempfile.mkdtemp(prefix="modelserver-model-"))
    if not uri:
        return folder
    from modelstorage import StorageError, download

    try:
        download(uri, folder)
    except StorageError as exc:
        log.error("could not fetch the model: %s", exc)
        sys.exit(1)
    return folder


def is_uri(location: str) -> bool:
    """A location modelstorage fetches rather than a local path (s3://..., models:/name/1)."""
    return "://" in location or location.startswith(("models:/", "runs:/"))
