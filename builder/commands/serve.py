"""`imgbuild serve`: the blueprint-submission service (Image Builder's Weldr API)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from builder.errors import ImgbuildError
from builder.service.client import read_token
from builder.service.defaults import DEFAULT_SOCKET, DEFAULT_STATE

log = logging.getLogger(__name__)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ImgbuildError(f"--listen wants HOST:PORT, not {text!r}")
    return host, int(port)


def run_serve(args: argparse.Namespace) -> int:
    # The service's modules (and their database libraries) load only for this command.
    from builder.service.dbengine import describe as describe_database
    from builder.service.dbengine import parse_database
    from builder.service.refpolicy import describe
    from builder.service.server import Service, ServiceConfig

    listen = parse_listen(args.listen) if args.listen else None
    if listen is not None and args.token_file is None:
        raise ImgbuildError("--listen needs --token-file: the service never serves TCP without a token")
    if args.workers < 0:
        raise ImgbuildError("--workers must be 0 (remote workers only) or more")
    if args.workers == 0 and args.worker_token_file is None:
        raise ImgbuildError(
            "--workers 0 builds nothing without remote workers", hint="add --worker-token-file and --listen"
        )
    if args.object_store is not None and args.worker_token_file is None:
        raise ImgbuildError(
            "--object-store holds remote workers' images: it needs --worker-token-file",
            hint="local builds keep their images in the state directory",
        )
    if args.worker_token_file is not None and listen is None:
        raise ImgbuildError("--worker-token-file needs --listen: remote workers reach the service over TCP")
    database = parse_database(args.database) if args.database else None
    config = ServiceConfig(
        state_dir=args.state,
        socket_path=args.socket,
        group=args.group,
        listen=listen,
        token=read_token(args.token_file) if args.token_file else None,
        workers=args.workers,
        default_ref=args.default_ref,
        allow_refs=tuple(args.allow_ref),
        database=database,
        worker_token=read_token(args.worker_token_file) if args.worker_token_file else None,
        heartbeat_timeout=args.heartbeat_timeout,
        object_store=args.object_store,
    )
    service = Service(config)  # checks the configuration (policy, --default-ref) before anything else
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    with service:
        where = [str(args.socket)]
        if listen is not None:
            where.append("http://{}:{}".format(*service.tcp_address))
        log.warning("imgbuild service listening on %s (state in %s)", ", ".join(where), args.state)
        log.warning("images allowed: %s", describe(service.policy))
        log.warning("state database: %s", describe_database(database) if database else "SQLite")
        if args.object_store:
            log.warning("remote workers' images go to %s", args.object_store)
        stopping.wait()
        log.warning("imgbuild service stopping")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the blueprint-submission service (Weldr API, as composer-cli speaks it)",
        description="Serve Image Builder's Weldr API on a Unix socket (and optionally TCP with a token); "
        "composes run the builder in the background.",
    )
    parser.add_argument(
        "--socket", type=Path, default=DEFAULT_SOCKET, help=f"Unix socket (default {DEFAULT_SOCKET})"
    )
    parser.add_argument("--group", help="group owning the socket (mode 0660)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="also serve HTTP on TCP (needs --token-file)")
    parser.add_argument("--token-file", type=Path, help="file holding the bearer token TCP clients must send")
    parser.add_argument(
        "--state", type=Path, default=DEFAULT_STATE, help=f"state directory (default {DEFAULT_STATE})"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="composes built on this machine at the same time (default 1; 0: remote workers only)",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        help="keep the state and the queue in PostgreSQL, e.g. postgresql://imgbuild@dbhost/imgbuild "
        "(default: SQLite in the state directory)",
    )
    parser.add_argument(
        "--worker-token-file",
        type=Path,
        help="file holding the token remote workers (imgbuild worker) must send; enables the worker API",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a remote worker silent this long loses its compose: requeued once, then failed (default 60)",
    )
    parser.add_argument(
        "--object-store",
        metavar="s3://BUCKET[/PREFIX]",
        help="remote workers put their images in this S3-compatible bucket, through presigned URLs (the "
        "service's AWS credentials and AWS_ENDPOINT_URL_S3 from the environment; workers get none); "
        "local builds keep theirs in the state directory",
    )
    parser.add_argument(
        "--default-ref",
        metavar="CONTAINER_REF",
        help="container image for compose requests that name none (plain `composer-cli compose start`)",
    )
    parser.add_argument(
        "--allow-ref",
        metavar="PATTERN",
        action="append",
        default=[],
        help="container references composes may build, e.g. 'oci-archive:/srv/images/*' or "
        "'docker://REGISTRY/team/*' (repeatable; default: any registry, no local path)",
    )
    parser.set_defaults(func=run_serve)
