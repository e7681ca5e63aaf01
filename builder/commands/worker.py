"""`imgbuild worker`: build the composes of a service (imgbuild serve) on this machine."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
import uuid
from pathlib import Path
from types import FrameType

from builder.arch import Arch
from builder.errors import ImgbuildError
from builder.service.client import read_token

log = logging.getLogger(__name__)
DEFAULT_CACHE = Path("/var/cache/imgbuild-worker")


def _label(text: str) -> str:
    from builder.service.routes_worker import NAME

    if not NAME.match(text):
        raise ImgbuildError(
            f"invalid label {text!r}", hint="1-100 of A-Z a-z 0-9 . _ : @ -, e.g. arch:aarch64"
        )
    return text


def run_worker(args: argparse.Namespace) -> int:
    # The worker's modules load only for this command.
    from builder.service.routes_worker import NAME
    from builder.service.worker import Worker, WorkerConfig
    from builder.service.worker_api import WorkerApi

    labels = tuple(args.label) or (f"arch:{Arch.host().value}",)
    name = args.name or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    if not NAME.match(name):
        raise ImgbuildError(f"invalid worker name {name!r}", hint="pass --name")
    api = WorkerApi(args.server, read_token(args.token_file), name, labels)
    args.cache.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = WorkerConfig(cache=args.cache, max_jobs=args.max_jobs, give_up=args.give_up)
    stopping = threading.Event()
    worker = Worker(api, config, stopping)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    log.warning("imgbuild worker %s (%s) taking composes from %s", name, " ".join(labels), args.server)
    worker.run()
    log.warning("imgbuild worker %s stopped", name)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "worker",
        help="build a service's composes on this machine (its worker API)",
        description="Take composes from `imgbuild serve --worker-token-file` over HTTP, build them with the "
        "same builder as `imgbuild build`, stream their logs and upload their images.",
    )
    parser.add_argument("--server", required=True, metavar="URL", help="the service, http://HOST:PORT")
    parser.add_argument(
        "--token-file", required=True, type=Path, help="file holding the worker token (not the client's)"
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"jobs and builder cache (default {DEFAULT_CACHE})"
    )
    parser.add_argument(
        "--label",
        type=_label,
        action="append",
        default=[],
        help="what this worker can do, e.g. arch:aarch64 (repeatable; default arch:<this machine's>)",
    )
    parser.add_argument("--name", help="the worker's name (default HOSTNAME-RANDOM)")
    parser.add_argument(
        "--give-up",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="abandon a finished build when the service stays unreachable this long (default 300)",
    )
    parser.add_argument("--max-jobs", type=int, default=0, help=argparse.SUPPRESS)
    parser.set_defaults(func=run_worker)
