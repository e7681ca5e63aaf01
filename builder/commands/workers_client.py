"""`imgbuild workers`: the service's remote workers, their labels, last heartbeat and current compose."""

from __future__ import annotations

import argparse
import json
import time

from builder.service.client import API, add_connection_arguments, client_from_args


def list_workers(args: argparse.Namespace) -> int:
    reply = client_from_args(args).call("GET", f"{API}/workers")
    workers = reply.get("workers") or []
    if args.json:
        print(json.dumps(workers, indent=2))
        return 0
    now = time.time()
    print(f"{'NAME':<28} {'LABELS':<30} {'LAST SEEN':>10}  COMPOSE")
    for worker in workers:
        age = f"{now - float(worker['last_seen']):.0f} s ago"
        labels = ",".join(worker["labels"])
        print(f"{worker['name']:<28} {labels:<30} {age:>10}  {worker['compose'] or '-'}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("workers", help="list the service's remote workers")
    add_connection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the service's JSON answer")
    parser.set_defaults(func=list_workers)
