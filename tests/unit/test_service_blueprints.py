"""The blueprint routes: versions, history, workspace, tags, undo, diff, freeze, delete."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.unit.test_service_support import ComposerCli, blueprint, running_service

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL


def _changes(cli: ComposerCli, name: str) -> list[dict[str, object]]:
    data = cli.get(f"/api/v1/blueprints/changes/{name}").json()
    assert data["errors"] == []
    changes: list[dict[str, object]] = data["blueprints"][0]["changes"]
    return changes


def _version(cli: ComposerCli, name: str) -> str:
    return str(cli.get(f"/api/v1/blueprints/info/{name}").json()["blueprints"][0]["version"])


def test_versions_are_bumped_as_image_builder_does(tmp_path: Path) -> None:
    with running_service(tmp_path / "state") as (_, cli):
        cli.push(blueprint(version="1.0.0"))
        assert _version(cli, "demo") == "1.0.0"
        cli.push(blueprint(version="1.0.0"))  # equal to the stored one: patch bump
        assert _version(cli, "demo") == "1.0.1"
        cli.push('name = "demo"\n')  # empty: patch bump
        assert _version(cli, "demo") == "1.0.2"
        cli.push(blueprint(version="2.0.0"))  # a new version is kept
        assert _version(cli, "demo") == "2.0.0"
        cli.push('name = "fresh"\n')  # first push without a version
        assert _version(cli, "fresh") == "0.0.0"

        changes = _changes(cli, "demo")
        assert [c["message"] for c in changes] == [  # newest first
            "Recipe demo, version 2.0.0 saved.",
            "Recipe demo, version 1.0.2 saved.",
            "Recipe demo, version 1.0.1 saved.",
            "Recipe demo, version 1.0.0 saved.",
        ]
        for change in changes:
            assert re.fullmatch(r"[0-9a-f]{40}", str(change["commit"]))
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(change["timestamp"]))
            assert change["revision"] is None
        paged = cli.get("/api/v1/blueprints/changes/demo?offset=1&limit=2").json()
        assert paged["offset"] == 1 and paged["limit"] == 2 and paged["blueprints"][0]["total"] == 4
        assert [c["commit"] for c in paged["blueprints"][0]["changes"]] == [c["commit"] for c in changes[1:3]]

        oldest = changes[-1]["commit"]
        old = cli.get(f"/api/v1/blueprints/change/demo/{oldest}").json()
        assert old["version"] == "1.0.0" and old["customizations"] == {"hostname": "h1"}
        assert cli.raw("POST", f"/api/v1/blueprints/undo/demo/{oldest}").json() == {"status": True}
        assert _changes(cli, "demo")[0]["message"] == f"demo.toml reverted to commit {oldest}"
        assert _version(cli, "demo") == "1.0.0"
        unknown = cli.get("/api/v1/blueprints/change/demo/" + "0" * 40)
        assert unknown.status == 400 and unknown.error_id() == "UnknownCommit"

        assert cli.raw("POST", "/api/v1/blueprints/tag/demo").json() == {"status": True}
        assert _changes(cli, "demo")[0]["revision"] == 1
        cli.push(blueprint(version="3.0.0"))
        cli.raw("POST", "/api/v1/blueprints/tag/demo")
        assert [c["revision"] for c in _changes(cli, "demo")[:2]] == [2, 1]
        assert cli.raw("POST", "/api/v1/blueprints/tag/nothing").error_id() == "BlueprintsError"

        listed = cli.get("/api/v1/blueprints/list").json()
        assert listed == {"total": 2, "offset": 0, "limit": 20, "blueprints": ["demo", "fresh"]}
        assert cli.get("/api/v1/blueprints/list?offset=1&limit=1").json()["blueprints"] == ["fresh"]
        assert cli.get("/api/v1/blueprints/list?limit=x").error_id() == "BadLimitOrOffset"


def test_workspace_diff_freeze_delete(tmp_path: Path) -> None:
    with running_service(tmp_path / "state") as (_, cli):
        cli.push(blueprint())
        work = {
            "name": "demo",
            "description": "changed",
            "version": "1.0.0",
            "customizations": {"hostname": "h2"},
        }
        answer = cli.raw(
            "POST", "/api/v1/blueprints/workspace", json.dumps(work).encode(), "application/json"
        )
        assert answer.json() == {"status": True}
        info = cli.get("/api/v1/blueprints/info/demo,nosuch").json()
        assert info["blueprints"][0]["description"] == "changed"
        assert info["changes"] == [{"name": "demo", "changed": True}]
        assert info["errors"] == [{"id": "UnknownBlueprint", "msg": "nosuch: "}]
        assert len(_changes(cli, "demo")) == 1  # the workspace is not a commit

        diff = cli.get("/api/v1/blueprints/diff/demo/NEWEST/WORKSPACE").json()["diff"]
        assert {"old": {"Description": "a test"}, "new": {"Description": "changed"}} in diff
        assert {  # one entry per customization, as lorax-composer sends them
            "old": {"Customizations.hostname": "h1"},
            "new": {"Customizations.hostname": "h2"},
        } in diff
        frozen = cli.get("/api/v1/blueprints/freeze/demo").json()
        assert frozen["blueprints"][0]["blueprint"]["name"] == "demo" and frozen["errors"] == []
        assert cli.get("/api/v1/blueprints/freeze/demo?format=toml").headers["Content-Type"] == "text/x-toml"

        assert cli.raw("DELETE", "/api/v1/blueprints/workspace/demo").json() == {"status": True}
        info = cli.get("/api/v1/blueprints/info/demo").json()
        assert info["changes"] == [{"name": "demo", "changed": False}]
        assert info["blueprints"][0]["description"] == "a test"
        assert cli.raw("DELETE", "/api/v1/blueprints/workspace/demo").error_id() == "BlueprintsError"

        # pushing clears the workspace copy
        cli.raw("POST", "/api/v1/blueprints/workspace", json.dumps(work).encode(), "application/json")
        cli.push(blueprint(version="1.1.0"))
        assert cli.get("/api/v1/blueprints/info/demo").json()["changes"][0]["changed"] is False

        assert cli.raw("DELETE", "/api/v1/blueprints/delete/demo").json() == {"status": True}
        assert cli.names() == []
        gone = cli.raw("DELETE", "/api/v1/blueprints/delete/demo")
        assert gone.status == 400 and gone.json()["errors"] == [
            {"id": "BlueprintsError", "msg": "Unknown blueprint: demo"}
        ]
        assert cli.get("/api/v1/blueprints/changes/demo").json()["errors"][0]["id"] == "UnknownBlueprint"
        toml = cli.get("/api/v1/blueprints/info/demo?format=toml")
        assert toml.status == 400 and toml.error_id() == "UnknownBlueprint"
        # a compose needs a committed blueprint
        assert cli.start("demo", "qcow2", "registry.invalid/os:1").error_id() == "UnknownBlueprint"


def test_v0_paths_work_too(tmp_path: Path) -> None:
    with running_service(tmp_path / "state") as (_, cli):
        assert cli.raw("POST", "/api/v0/blueprints/new", blueprint().encode(), "text/x-toml").status == 200
        assert cli.get("/api/v0/blueprints/list").json()["blueprints"] == ["demo"]
        assert cli.get("/api/v2/blueprints/list").status == 404
