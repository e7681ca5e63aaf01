"""composer-cli's commands as the requests it sends (no tests here).

Read from lorax's `src/composer/http_client.py` and `src/composer/cli/*.py` (branch rhel8-branch): the
paths, query strings (`limit=0` first, then `limit=TOTAL`, for the paged lists), methods, content types
and bodies. Each method returns the decoded JSON, or the raw answer where composer-cli reads it raw.
Also here: what composer-cli's `blueprints diff` printer needs of an entry to print it without crashing.
"""

from __future__ import annotations

import json
from typing import Any

from tests.unit.test_service_support import Answer, ComposerCli

V1 = "/api/v1"


class Commands:
    def __init__(self, cli: ComposerCli) -> None:
        self.cli = cli

    def _json(self, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> Any:
        answer = self.cli.raw(method, V1 + path, body, ctype)
        assert answer.status != 500, answer.body
        return answer.json()

    def _unlimited(self, path: str, total_key: str = "total") -> Any:
        """http_client.get_url_json_unlimited: limit=0 for the total, then limit=TOTAL."""
        sep = "&" if "?" in path else "?"
        first = self._json("GET", f"{path}{sep}limit=0")
        if total_key == "changes":
            total = max([c["total"] for c in first["blueprints"]] or [0])
        else:
            total = first[total_key]
        return self._json("GET", f"{path}{sep}limit={total}")

    # -- blueprints
    def push(self, toml_text: str) -> Any:
        return self._json("POST", "/blueprints/new", toml_text.encode(), "text/x-toml")

    def workspace(self, toml_text: str) -> Any:
        return self._json("POST", "/blueprints/workspace", toml_text.encode(), "text/x-toml")

    def list_(self) -> Any:
        return self._unlimited("/blueprints/list")

    def show(self, name: str) -> Answer:  # also `blueprints save`
        return self.cli.raw("GET", f"{V1}/blueprints/info/{name}?format=toml")

    def changes(self, name: str) -> Any:
        return self._unlimited(f"/blueprints/changes/{name}", total_key="changes")

    def diff(self, name: str, old: str, new: str) -> Any:
        return self._json("GET", f"/blueprints/diff/{name}/{old}/{new}")

    def freeze(self, name: str) -> Any:
        return self._json("GET", f"/blueprints/freeze/{name}")

    def freeze_toml(self, name: str) -> Answer:  # `freeze show` and `freeze save`
        return self.cli.raw("GET", f"{V1}/blueprints/freeze/{name}?format=toml")

    def depsolve(self, name: str) -> Any:
        return self._json("GET", f"/blueprints/depsolve/{name}")

    def tag(self, name: str) -> Any:
        return self._json("POST", f"/blueprints/tag/{name}", b"")

    def undo(self, name: str, commit: str) -> Any:
        return self._json("POST", f"/blueprints/undo/{name}/{commit}", b"")

    def delete(self, name: str) -> Any:
        return self._json("DELETE", f"/blueprints/delete/{name}")

    # -- compose
    def types(self) -> Any:
        return self._json("GET", "/compose/types")

    def start(self, name: str, compose_type: str, size_mib: int = 0, upload: Any = None) -> Any:
        """compose start [--size MiB] NAME TYPE [IMAGE PROFILE.toml | IMAGE PROVIDER PROFILE]"""
        config: dict[str, Any] = {"blueprint_name": name, "compose_type": compose_type, "branch": "master"}
        if size_mib > 0:
            config["size"] = size_mib * 1024**2
        if upload is not None:
            config["upload"] = upload
        return self._json("POST", "/compose", json.dumps(config).encode(), "application/json")

    def start_ostree(
        self,
        name: str,
        compose_type: str,
        url: str = "",
        ref: str = "",
        parent: str = "",
        size_mib: int = 0,
        upload: Any = None,
    ) -> Any:
        """compose start-ostree [--size] [--parent] [--ref] [--url] NAME TYPE [IMAGE PROFILE.toml]"""
        config: dict[str, Any] = {
            "blueprint_name": name,
            "compose_type": compose_type,
            "branch": "master",
            "ostree": {"ref": ref, "parent": parent},
        }
        if size_mib > 0:
            config["size"] = size_mib * 1024**2
        if url:
            config["ostree"]["url"] = url
        if upload is not None:
            config["upload"] = upload
        return self._json("POST", "/compose", json.dumps(config).encode(), "application/json")

    def status(self) -> Any:
        """compose status / list: queue, finished, failed."""
        queue = self._json("GET", "/compose/queue")
        entries = queue["run"] + queue["new"]
        entries += self._json("GET", "/compose/finished")["finished"]
        entries += self._json("GET", "/compose/failed")["failed"]
        return entries

    def info(self, compose_id: str) -> Any:
        return self._json("GET", f"/compose/info/{compose_id}")

    def log(self, compose_id: str, kib: int = 1024) -> Answer:
        return self.cli.raw("GET", f"{V1}/compose/log/{compose_id}?size={kib}")

    def download(self, what: str, compose_id: str) -> Answer:  # logs, metadata, results, image
        return self.cli.raw("GET", f"{V1}/compose/{what}/{compose_id}")

    def cancel(self, compose_id: str) -> Any:
        return self._json("DELETE", f"/compose/cancel/{compose_id}")

    def compose_delete(self, *ids: str) -> Any:
        return self._json("DELETE", f"/compose/delete/{','.join(ids)}")

    # -- sources, projects, modules
    def sources(self) -> Any:
        return self._json("GET", "/projects/source/list")

    def projects(self) -> Any:
        return self._unlimited("/projects/list")

    def modules(self) -> Any:
        return self._unlimited("/modules/list")


def diff_printable(entry: dict[str, Any]) -> bool:
    """What composer-cli's pretty_diff_entry needs: one label; a changed value is a string, a non-empty
    list or a table; lists are never empty; a table's lists are strings or tables never nested in
    lists."""
    sides = [side for side in (entry["old"], entry["new"]) if side]
    if not sides or any(len(side) != 1 for side in sides):
        return False
    label = next(iter(sides[0]))
    values = [side[label] for side in sides]
    if entry["old"] and entry["new"] and not all(isinstance(v, str | list | dict) for v in values):
        return False

    def flat_ok(value: Any) -> bool:
        if isinstance(value, list):
            return bool(value) and all(isinstance(v, str | dict) for v in value)
        if isinstance(value, dict):
            return all(
                not isinstance(v, list) or (v and all(isinstance(x, str) for x in v)) for v in value.values()
            )
        return True

    return all(flat_ok(v) for v in values)
