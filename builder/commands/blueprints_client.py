"""`imgbuild blueprints push|list|show|delete|changes`: the service's blueprint store, as composer-cli."""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from pathlib import Path

from builder.errors import ImgbuildError
from builder.service.client import API, client_actions, client_from_args


def _name(name: str) -> str:
    """A name as one path segment: whatever it holds reaches the server's name check intact."""
    return urllib.parse.quote(name, safe="")


def push(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    for path in args.files:
        try:
            body = Path(path).read_bytes()
        except OSError as e:
            raise ImgbuildError(f"cannot read {path}: {e.strerror}") from None
        content_type = "application/json" if str(path).endswith(".json") else "text/x-toml"
        client.call("POST", f"{API}/blueprints/new", body, content_type)
    return 0


def list_(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    total = client.get(f"{API}/blueprints/list?limit=0")["total"]
    for name in client.get(f"{API}/blueprints/list?limit={int(total)}")["blueprints"]:
        print(name)
    return 0


def show(args: argparse.Namespace) -> int:
    client = client_from_args(args)
    reply = client.request("GET", f"{API}/blueprints/info/{_name(args.name)}?format=toml")
    if reply.status != 200:
        client.call(
            "GET", f"{API}/blueprints/info/{_name(args.name)}?format=toml"
        )  # raises the service's error
    sys.stdout.write(reply.body.decode("utf-8", "replace"))
    return 0


def delete(args: argparse.Namespace) -> int:
    client_from_args(args).call("DELETE", f"{API}/blueprints/delete/{_name(args.name)}")
    return 0


def changes(args: argparse.Namespace) -> int:
    data = client_from_args(args).get(f"{API}/blueprints/changes/{_name(args.name)}?limit={args.limit}")
    for error in data.get("errors", []):
        raise ImgbuildError(f"unknown blueprint {error.get('msg', args.name)}")
    for blueprint in data["blueprints"]:
        print(blueprint["name"])
        for change in blueprint["changes"]:
            revision = f" revision {change['revision']}" if change.get("revision") is not None else ""
            print(f"    {change['timestamp']}  {change['commit']}{revision}  {change['message']}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    action = client_actions(sub, "blueprints", "manage blueprints stored by the service (imgbuild serve)")

    child = action("push", "store blueprints (TOML, or JSON by the .json suffix)")
    child.add_argument("files", nargs="+", type=Path, metavar="FILE", help="the blueprint files")
    child.set_defaults(func=push)
    action("list", "list the stored blueprints").set_defaults(func=list_)
    child = action("show", "print a blueprint as TOML")
    child.add_argument("name", metavar="NAME", help="the blueprint's name")
    child.set_defaults(func=show)
    child = action("delete", "delete a blueprint and its history")
    child.add_argument("name", metavar="NAME", help="the blueprint's name")
    child.set_defaults(func=delete)
    child = action("changes", "list a blueprint's commits, newest first")
    child.add_argument("name", metavar="NAME", help="the blueprint's name")
    child.add_argument("--limit", type=int, default=20, help="list at most this many (default 20)")
    child.set_defaults(func=changes)
