"""Command-line flags, named as KServe's runtimes name them so ServingRuntime args fit as-is."""

from __future__ import annotations

import argparse
import logging
import os

log = logging.getLogger(__name__)


def str2bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser(prog: str, description: str = "") -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog=prog, description=description or None)
    parser.add_argument("--model_name", default=env("MODEL_NAME", "model"),
                        help="name the model is served under (env MODEL_NAME; default: model)")
    parser.add_argument("--model_dir", default=env("MODEL_DIR", "/mnt/models"),
                        help="local folder the model is loaded from, or a URI (s3://..., "
                             "models:/name/1, ...) fetched into a temporary folder first "
                             "(default: /mnt/models)")
    parser.add_argument("--http_port", type=int, default=int(env("HTTP_PORT", "8080")),
                        help="REST port (default: 8080)")
    parser.add_argument("--grpc_port", type=int, default=int(env("GRPC_PORT", "8081")),
                        help="gRPC port (default: 8081)")
    parser.add_argument("--host", default=env("HOST", "0.0.0.0"),
                        help="address to listen on (default: 0.0.0.0)")
    parser.add_argument("--workers", type=int, default=int(env("WORKERS", "1")),
                        help="server processes sharing the ports (default: 1)")
    parser.add_argument("--enable_grpc", type=str2bool, nargs="?", const=True, default=True,
                        help="serve gRPC on --grpc_port (default: true)")
    parser.add_argument("--grpc_max_message_bytes", type=int,
                        default=int(env("GRPC_MAX_MESSAGE_BYTES", str(256 * 1024 * 1024))),
                        help="largest gRPC message received or sent (default: 256 MiB)")
    parser.add_argument("--multi_model", type=str2bool, nargs="?", const=True, default=False,
                        help="treat --model_dir as a repository of model folders even when it "
                             "holds none yet (default: detected)")
    parser.add_argument("--load_at_startup", type=str2bool, nargs="?", const=True, default=True,
                        help="load every model in the repository at start (default: true)")
    parser.add_argument("--repository_poll_seconds", type=float, default=0.0,
                        help="look at the repository folder this often and serve what it holds: "
                             "new folders load, removed ones unload, changed ones reload; the "
                             "load and unload API is then refused (default: 0, no polling)")
    # Per-model settings: a flag given here wins over every model's settings.json (None: not
    # given, so settings.json, then the runtime, then the defaults below decide).
    parser.add_argument("--max_batch_size", type=int, default=None,
                        help="merge concurrent requests into calls of up to this many rows; "
                             "0 turns batching off (default: the runtime's choice)")
    parser.add_argument("--max_batch_delay_ms", type=float, default=None,
                        help="how long a batch may wait for more rows (default: 0, no waiting)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max_request_bytes", type=int, default=256 * 1024 * 1024,
                        help="larger request bodies get 413 (default: 256 MiB)")
    limits.add_argument("--max_tensor_elements", type=int, default=100_000_000,
                        help="requests with more tensor elements get 400 (default: 1e8)")
    limits.add_argument("--request_timeout_seconds", type=float, default=None,
                        help="a request not answered in time gets 504; 0 for none (default: 120)")
    limits.add_argument("--max_queue_size", type=int, default=None,
                        help="requests one model may hold at once; more get 503 (default: 1000)")
    limits.add_argument("--max_header_bytes", type=int, default=64 * 1024,
                        help="a request whose line and headers are larger gets 431 "
                             "(default: 64 KiB)")
    limits.add_argument("--request_read_timeout_seconds", type=float, default=30.0,
                        help="once a request's first byte has come, all of it must come within "
                             "this, else 408 (default: 30)")
    limits.add_argument("--max_connections", type=int, default=2000,
                        help="open HTTP connections; past it the longest-idle one is closed "
                             "(and gRPC calls at once; past it RESOURCE_EXHAUSTED) "
                             "(default: 2000)")
    limits.add_argument("--keep_alive_timeout", type=float, default=3660.0,
                        help="seconds an idle HTTP or gRPC connection stays open; longer than "
                             "Envoy's 1-hour upstream idle timeout, so the proxy always closes "
                             "first "
                             "(default: 3660)")
    limits.add_argument("--graceful_shutdown_seconds", type=float, default=25.0,
                        help="on SIGTERM, how long in-flight requests may take to finish "
                             "(default: 25, inside Kubernetes' 30-second grace period)")
    security = parser.add_argument_group("security")
    security.add_argument("--admin_token_file", default=env("ADMIN_TOKEN_FILE"),
                          help="a file holding the token every call of the repository API "
                               "(index, load, unload) must carry, from any client, as "
                               "'Authorization: Bearer <token>'; read again when it changes "
                               "(env ADMIN_TOKEN_FILE; default: none, and only clients on this "
                               "host may call it)")
    security.add_argument("--allowed_storage_uris", type=_prefixes,
                          default=_prefixes(env("ALLOWED_STORAGE_URIS", "")),
                          help="comma-separated prefixes a load's storage_uri must lie under, "
                               "whole path segments: s3://models/,gs://team/prod/ (env "
                               "ALLOWED_STORAGE_URIS; default: none, every storage_uri is "
                               "refused)")
    security.add_argument("--ssl_certfile", default=None,
                          help="PEM certificate (chain): REST and gRPC over TLS; the files are "
                               "read again when they change (default: plain text)")
    security.add_argument("--ssl_keyfile", default=None, help="the certificate's PEM key")
    security.add_argument("--ssl_ca_certs", default=None,
                          help="PEM CA certificates: clients must present a certificate one of "
                               "them signed (mutual TLS; default: no client certificates)")
    parser.add_argument("--enable_tracing", type=str2bool, nargs="?", const=True, default=None,
                        help="OpenTelemetry traces of inference requests, sent as OTEL_* "
                             "variables say (default: on when OTEL_TRACES_EXPORTER or "
                             "OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT is set)")
    parser.add_argument("--access_log", type=str2bool, nargs="?", const=True,
                        default=str2bool(env("ACCESS_LOG", "true")),
                        help="one log line per request (default: true)")
    parser.add_argument("--log_format", choices=["text", "json"], default=env("LOG_FORMAT", "text"),
                        help="text or one JSON object per line (default: text)")
    parser.add_argument("--log_level", default=env("LOG_LEVEL", "info"),
                        choices=["critical", "error", "warning", "info", "debug"],
                        help="log level (default: info)")
    return parser


PER_MODEL = ("max_batch_size", "max_batch_delay_ms", "max_queue_size", "request_timeout_seconds")


def add_runtime_flags(parser: argparse.ArgumentParser, prog: str,
                      flags: dict[str, dict]) -> None:
    """A runtime's own flags (`Model.flags`), each `--name`, not given unless on the command
    line."""
    if not flags:
        return
    group = parser.add_argument_group(prog)
    for name, options in flags.items():
        group.add_argument(f"--{name}", dest=f"runtime_{name}", default=None, **options)


def flag_settings(args) -> dict:
    """The model settings the flags give: they win over every model's settings.json."""
    settings = {key: getattr(args, key) for key in PER_MODEL if getattr(args, key) is not None}
    parameters = {key[len("runtime_"):]: value for key, value in vars(args).items()
                  if key.startswith("runtime_") and value is not None}
    if parameters:
        settings["parameters"] = parameters
    return settings


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None = None):
    """Parse known flags; unknown ones are logged and ignored, as KServe's servers do."""
    args, unknown = parser.parse_known_args(argv)
    args.prog = parser.prog
    if unknown:
        log.warning("ignoring unknown arguments: %s", " ".join(unknown))
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    try:
        check_security(args)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _prefixes(value: str) -> list[str]:
    return [prefix.strip() for prefix in value.split(",") if prefix.strip()]


def check_security(args) -> None:
    """Refuse to start on a security flag that cannot work: ValueError, saying why."""
    from .core.access import SourcePolicy, TokenFile
    from .transports.tls import TlsFiles

    if args.admin_token_file:
        TokenFile(args.admin_token_file).read()
    SourcePolicy(args.allowed_storage_uris)
    if args.ssl_certfile or args.ssl_keyfile or args.ssl_ca_certs:
        if not (args.ssl_certfile and args.ssl_keyfile):
            raise ValueError("TLS needs both --ssl_certfile and --ssl_keyfile")
        TlsFiles.from_args(args).check()
