"""`imgbuild compose start|status|log|image|cancel|delete`: composes on the service, as composer-cli."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from builder.commands import options
from builder.errors import ImgbuildError
from builder.service.client import API, ComposeFailed, WeldrClient, client_actions, client_from_args

ENDED = ("FINISHED", "FAILED")


def _uuid(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def _info(client: WeldrClient, compose_id: str) -> dict[str, Any]:
    info: dict[str, Any] = client.get(f"{API}/compose/info/{_uuid(compose_id)}")
    return info


def _outcome(info: dict[str, Any]) -> int:
    if info["queue_status"] == "FAILED":
        raise ComposeFailed(f"compose {info['id']} failed: {info.get('reason') or 'no reason given'}")
    return 0


def _size(text: str) -> int:
    """compose start --size in the one size syntax; composer-cli's habit (a bare number of MiB) gets its
    translation. composer-cli sends its MiB as bytes, and so does this: the service sees the same request."""
    if text.strip().isdigit():
        raise ImgbuildError(
            f"--size {text} has no unit",
            hint=f"composer-cli's --size counts MiB: write --size {text.strip()}M (or e.g. 10G)",
        )
    return options.size(text)


def _log_size(text: str) -> int:
    """compose log --size, in the one size syntax; composer's API counts KiB (a bare number here)."""
    if text.strip().isdigit():
        raise ImgbuildError(f"--size {text} has no unit", hint=f"write --size {text.strip()}K (KiB) or 1M")
    return options.size(text)


def start(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    request = {
        "blueprint_name": args.blueprint,
        "compose_type": args.type,
        "branch": "",
        "size": args.size,  # bytes on the wire, as composer-cli sends its --size MiB
    }
    if args.ref is not None:  # else the blueprint's container_ref or the service's --default-ref
        request["container_ref"] = args.ref
    if args.arch is not None:  # routed to a worker labelled arch:ARCH
        request["arch"] = args.arch
    reply = client.call("POST", f"{API}/compose", json.dumps(request).encode(), "application/json")
    compose_id = str(reply["build_id"])
    for warning in reply.get("warnings") or []:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"Compose {compose_id} added to the queue")
    if not args.wait:
        return 0
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    while True:
        info = _info(client, compose_id)
        if info["queue_status"] in ENDED:
            print(f"Compose {compose_id} {info['queue_status']}")
            return _outcome(info)
        if deadline is not None and time.monotonic() > deadline:
            raise ImgbuildError(
                f"compose {compose_id} did not end within {args.timeout} s", hint="it still runs"
            )
        time.sleep(args.poll)


def status(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    target = _uuid(args.uuid) if args.uuid else "*"
    for entry in client.get(f"{API}/compose/status/{target}")["uuids"]:
        reason = f"  {entry['reason']}" if entry.get("reason") else ""
        print(
            f"{entry['id']} {entry['queue_status']:<8} {entry['compose_type']:<6} "
            f"{entry['blueprint']} {entry['version']}{reason}"
        )
    return 0


def log(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    path = f"{API}/compose/log/{_uuid(args.uuid)}"
    if not args.follow:
        kib = -(-args.size // 1024)  # the API's unit, rounded up
        reply = client.request("GET", f"{path}?size={kib}")
        if reply.headers.get("Content-Type", "").startswith("application/json"):
            client.call("GET", f"{path}?size={kib}")  # raises the service's error
        sys.stdout.buffer.write(reply.body)
        return 0
    offset = 0
    while True:
        reply = client.request("GET", f"{path}?offset={offset}")
        waiting = reply.headers.get("Content-Type", "").startswith("application/json")
        if not waiting and reply.status == 200:
            sys.stdout.buffer.write(reply.body)
            sys.stdout.buffer.flush()
            offset += len(reply.body)
        elif reply.status != 200:
            client.call("GET", path)  # raises the service's error
        if waiting or not reply.body:
            info = _info(client, args.uuid)
            if info["queue_status"] in ENDED:
                final = client.request("GET", f"{path}?offset={offset}")  # the last lines, written at the end
                sys.stdout.buffer.write(final.body)
                return _outcome(info)
            time.sleep(args.poll)


def image(args: argparse.Namespace) -> int:
    path = client_from_args(args).download(f"{API}/compose/image/{_uuid(args.uuid)}", args.output)
    print(path)
    return 0


def cancel(args: argparse.Namespace) -> int:
    client_from_args(args).call("DELETE", f"{API}/compose/cancel/{_uuid(args.uuid)}")
    return 0


def delete(args: argparse.Namespace) -> int:
    reply = client_from_args(args).call("DELETE", f"{API}/compose/delete/{_uuid(args.uuid)}")
    for error in reply.get("errors") or []:
        raise ImgbuildError(f"{error.get('id')}: {error.get('msg')}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    action = client_actions(sub, "compose", "start and follow composes on the service (imgbuild serve)")

    child = action("start", "queue a compose of a stored blueprint")
    child.add_argument("blueprint", metavar="NAME", help="the stored blueprint to build")
    child.add_argument("type", metavar="TYPE", help="output format (qcow2, raw)")
    child.add_argument(
        "--ref",
        metavar="CONTAINER_REF",
        help="the ostree-native container image (default: the blueprint's container_ref, else the "
        "service's --default-ref)",
    )
    child.add_argument(
        "--size",
        type=_size,
        default=0,
        metavar="SIZE",
        help="disk size, e.g. 10G, 4096M (default: fits the content); composer-cli's bare MiB are refused",
    )
    child.add_argument(
        "--arch", help="build for this architecture (x86_64, aarch64): on a worker labelled arch:ARCH"
    )
    child.add_argument("--wait", action="store_true", help="wait until it finishes; exit 1 when it fails")
    child.add_argument("--timeout", type=float, metavar="SECONDS", help="give up waiting after this long")
    child.add_argument("--poll", type=float, default=5.0, metavar="SECONDS", help=argparse.SUPPRESS)
    child.set_defaults(func=start)
    child = action("status", "list composes, or show one")
    child.add_argument("uuid", nargs="?", metavar="UUID", help="the compose (default: list them all)")
    child.set_defaults(func=status)
    child = action("log", "print a compose's log (the tail, or all of it as it grows with --follow)")
    child.add_argument("uuid", metavar="UUID", help="the compose's id (compose status lists them)")
    child.add_argument("--follow", action="store_true", help="keep printing until the compose ends")
    child.add_argument(
        "--size",
        type=_log_size,
        default=1024 * 1024,
        metavar="SIZE",
        help="how much of the log's end to print, e.g. 64K, 1M (default 1M)",
    )
    child.add_argument("--poll", type=float, default=1.0, metavar="SECONDS", help=argparse.SUPPRESS)
    child.set_defaults(func=log)
    child = action("image", "download a finished compose's image")
    child.add_argument("uuid", metavar="UUID", help="the compose's id (compose status lists them)")
    child.add_argument("--output", type=Path, default=Path(), metavar="DIR", help="directory (default .)")
    child.set_defaults(func=image)
    child = action("cancel", "stop a waiting or running compose")
    child.add_argument("uuid", metavar="UUID", help="the compose's id (compose status lists them)")
    child.set_defaults(func=cancel)
    child = action("delete", "delete a finished or failed compose and its files")
    child.add_argument("uuid", metavar="UUID", help="the compose's id (compose status lists them)")
    child.set_defaults(func=delete)
