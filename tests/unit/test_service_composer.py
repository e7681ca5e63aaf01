"""composer-cli's whole command set, as the requests it sends (tests/unit/composer_cli.py), against the
service with the stand-in builder: blueprints push/list/show/changes/diff/freeze/depsolve/tag/undo/
workspace/delete, compose types/start/start-ostree/status/info/log/logs/metadata/results/image/cancel/
delete, sources/projects/modules list; and every option imgbuild cannot honour refused, never dropped."""

from __future__ import annotations

import io
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.unit.composer_cli import Commands, diff_printable
from tests.unit.test_service_support import running_service, standin_builder

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL

OK = "oci:/standin/ok"
BP1 = """name = "web"
description = "a web server"
version = "1.0.0"

[customizations]
hostname = "web1"

[[customizations.user]]
name = "alice"
password = "$6$salt$hash"
groups = ["wheel"]
key = "ssh-ed25519 AAAA alice"

[[customizations.group]]
name = "web"

[customizations.services]
enabled = ["sshd"]
"""
BP2 = """name = "web"
description = "a web server, changed"
version = "1.1.0"

[customizations]
hostname = "web2"
fips = true

[[customizations.user]]
name = "alice"
password = "$6$salt$hash"
groups = ["wheel", "web"]

[[customizations.user]]
name = "bob"

[[customizations.group]]
name = "web"
gid = 2000

[[customizations.group]]
name = "ops"

[customizations.services]
enabled = ["sshd", "chronyd"]
disabled = []

[customizations.disk]
[[customizations.disk.partitions]]
mountpoint = "/var/log"
minsize = "1 GiB"
"""


def _tar_names(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getnames()


def test_blueprint_commands(tmp_path: Path) -> None:
    with running_service(tmp_path / "state") as (_, cli):
        cc = Commands(cli)
        assert cc.push(BP1) == {"status": True}
        assert cc.push(BP2) == {"status": True}
        assert cc.list_()["blueprints"] == ["web"]
        assert tomllib.loads(cc.show("web").body.decode())["version"] == "1.1.0"
        changes = cc.changes("web")["blueprints"][0]["changes"]
        assert len(changes) == 2
        old_commit = changes[1]["commit"]

        diff = cc.diff("web", old_commit, "NEWEST")["diff"]
        assert all(diff_printable(entry) for entry in diff), diff
        labels = [next(iter(e["new"] or e["old"])) for e in diff]
        assert labels[:2] == ["Description", "Version"]  # then the customizations, one entry per key/item
        assert {
            "old": None,
            "new": {
                "Customizations.disk": diff[labels.index("Customizations.disk")]["new"]["Customizations.disk"]
            },
        } in diff
        assert {
            "old": {"Customizations.hostname": "web1"},
            "new": {"Customizations.hostname": "web2"},
        } in diff
        users = [e for e in diff if "Customizations.user" in (e["new"] or e["old"])]
        assert [
            (e["old"] is None, (e["new"] or {}).get("Customizations.user", {}).get("name")) for e in users
        ] == [
            (True, "bob"),  # added
            (False, "alice"),  # changed: groups and key
        ]
        groups = [e for e in diff if "Customizations.group" in (e["new"] or e["old"])]
        assert len(groups) == 2  # ops added, web changed (gid)
        # numbers and booleans as their JSON text: composer-cli cannot print a changed one otherwise
        assert {"old": None, "new": {"Customizations.fips": "true"}} in diff
        # the disk's list of partitions is one printable line inside the table
        assert isinstance(
            diff[labels.index("Customizations.disk")]["new"]["Customizations.disk"]["partitions"], str
        )

        frozen = cc.freeze("web")["blueprints"][0]["blueprint"]
        assert frozen["packages"] == [] and frozen["modules"] == [] and frozen["groups"] == []
        assert tomllib.loads(cc.freeze_toml("web").body.decode())["name"] == "web"
        solved = cc.depsolve("web")["blueprints"][0]
        assert solved["dependencies"] == [] and solved["blueprint"]["packages"] == []
        assert cc.tag("web") == {"status": True}
        assert cc.changes("web")["blueprints"][0]["changes"][0]["revision"] == 1

        assert cc.workspace(BP1.replace("web1", "work")) == {"status": True}
        work_diff = cc.diff("web", "NEWEST", "WORKSPACE")["diff"]
        assert all(diff_printable(entry) for entry in work_diff), work_diff
        assert cc.undo("web", old_commit) == {"status": True}
        assert tomllib.loads(cc.show("web").body.decode())["customizations"]["hostname"] == "web1"
        assert cc.delete("web") == {"status": True}
        assert cc.list_()["blueprints"] == []


def test_compose_commands(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path)) as (_, cli):
        cc = Commands(cli)
        cc.push(BP1)
        assert {t["name"] for t in cc.types()["types"]} >= {"qcow2", "raw"}
        started = cc.start_ostree("web", "qcow2", url=OK, size_mib=2048)
        assert started["status"] is True, started
        compose_id = started["build_id"]
        cli.wait(compose_id)
        entry = next(e for e in cc.status() if e["id"] == compose_id)
        assert entry["queue_status"] == "FINISHED" and entry["image_size"] == 2048 * 1024**2
        info = cc.info(compose_id)
        assert info["container_ref"] == OK and info["deps"] == {"packages": []}
        assert info["blueprint"]["packages"] == [] and info["blueprint"]["modules"] == []
        assert cc.log(compose_id).status == 200
        assert _tar_names(cc.download("logs", compose_id).body) == ["logs/osbuild.log"]
        assert f"{compose_id}.json" in _tar_names(cc.download("metadata", compose_id).body)
        assert f"{compose_id}-disk.qcow2" in _tar_names(cc.download("results", compose_id).body)
        assert cc.download("image", compose_id).body.startswith(b"qcow2:" + OK.encode())

        hang = cc.start_ostree("web", "raw", url="oci:/standin/hang")["build_id"]
        cli.wait(hang, until=("RUNNING",))
        assert cc.cancel(hang) == {"uuid": hang, "status": True}
        deleted = cc.compose_delete(compose_id, hang)
        assert [d["uuid"] for d in deleted["uuids"]] == [compose_id, hang] and deleted["errors"] == []

        assert cc.sources() == {"sources": []}
        assert cc.projects()["projects"] == [] and cc.modules()["modules"] == []


def _error(answer: dict[str, object]) -> str:
    assert answer["status"] is False, answer
    errors = answer["errors"]
    assert isinstance(errors, list)
    return f"{errors[0]['id']}: {errors[0]['msg']}"


def test_options_imgbuild_cannot_honour_are_refused(tmp_path: Path) -> None:
    with running_service(tmp_path / "state", builder=standin_builder(tmp_path)) as (service, cli):
        cc = Commands(cli)
        cc.push(f'container_ref = "{OK}"\n' + BP1)
        cc.push(BP1.replace('name = "web"', 'name = "bare"'))
        assert "--ref" in _error(cc.start_ostree("web", "qcow2", url=OK, ref="fedora/x86_64/iot"))
        assert "--parent" in _error(cc.start_ostree("web", "qcow2", url=OK, parent="abc"))
        no_image = _error(cc.start("bare", "qcow2"))
        assert "--default-ref" in no_image and "--url" in no_image and "container_ref" in no_image
        too_big = _error(cc.start_ostree("web", "qcow2", url=OK, size_mib=9000000000000))
        assert too_big.startswith("ComposeError: size 9437184000000000000 bytes is too large")

        profile: dict[str, Any] = {
            "provider": "aws",
            "settings": {
                "accessKeyID": "AKIAEXAMPLEKEY",
                "secretAccessKey": "do-not-show-this-secret",
                "bucket": "images",
                "region": "eu-west-1",
                "key": "web-image",
            },
        }
        aws = _error(cc.start("web", "raw", upload={"image_name": "web-ami", **profile}))
        assert aws.startswith("ComposeError: an AWS upload needs compose type ami, not raw")
        assert "needs an upload profile" in _error(cc.start("web", "ami"))
        keyless = dict(profile, settings={k: v for k, v in profile["settings"].items() if k != "accessKeyID"})
        assert "settings.accessKeyID" in _error(
            cc.start("web", "ami", upload={"image_name": "web-ami", **keyless})
        )
        azure = _error(
            cc.start("web", "qcow2", upload={"image_name": "x", "provider": "azure", "settings": {}})
        )
        assert azure.startswith("UploadError: imgbuild cannot upload to provider 'azure'")
        named = _error(
            cc.start("web", "qcow2", upload={"image_name": "web-ami", "provider": "aws", "profile": "p"})
        )
        assert "no provider profiles" in named
        bad = dict(profile, settings={**profile["settings"], "region": "not a region"})
        assert "settings.region" in _error(cc.start("web", "qcow2", upload={"image_name": "web-ami", **bad}))
        assert service.store.composes() == []  # nothing refused was queued
        assert not (tmp_path / "state" / "composes").exists() or not any(
            (tmp_path / "state" / "composes").iterdir()
        )


def test_the_image_named_by_the_blueprint(tmp_path: Path) -> None:
    with running_service(
        tmp_path / "state", builder=standin_builder(tmp_path), default_ref="oci:/standin/fail"
    ) as (
        _,
        cli,
    ):
        cc = Commands(cli)
        cc.push(f'container_ref = "{OK}"\n' + BP1)
        compose_id = cc.start("web", "qcow2")["build_id"]  # plain `compose start`: the blueprint's image
        assert cli.wait(compose_id) == "FINISHED"
        assert cc.info(compose_id)["container_ref"] == OK
        blueprint_toml = tmp_path / "state" / "composes" / compose_id / "blueprint.toml"
        assert "container_ref" not in tomllib.loads(blueprint_toml.read_text())  # the builder gets it as REF
        conflict = _error(cc.start_ostree("web", "qcow2", url="oci:/standin/slow"))
        assert "names 'oci:/standin/slow' but blueprint web names 'oci:/standin/ok'" in conflict
        assert cc.start_ostree("web", "qcow2", url=OK)["status"] is True  # the same image is no conflict
        # without one in the blueprint, the service's --default-ref
        cc.push(BP1.replace('name = "web"', 'name = "plain"'))
        assert cc.info(cc.start("plain", "qcow2")["build_id"])["container_ref"] == "oci:/standin/fail"
