"""The reference policy (`serve --allow-ref`): registries by default, local paths only under the operator's
directories, `..` and symlinks resolved before matching, and one refusal whatever the path holds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.service.refpolicy import RefPolicy, RefusedReference
from tests.unit.composer_cli import Commands
from tests.unit.test_service_support import blueprint, running_service, standin_builder

pytestmark = pytest.mark.usefixtures("service_database")  # SQLite and PostgreSQL


@pytest.fixture
def images(tmp_path: Path) -> Path:
    allowed = tmp_path / "srv" / "images"
    allowed.mkdir(parents=True)
    (allowed / "os.ociarchive").write_bytes(b"not read by the policy")
    (allowed / "escape").symlink_to("/etc")
    (tmp_path / "secret").write_text("private")
    (tmp_path / "link-to-images").symlink_to(allowed)
    return allowed


def _refusal(policy: RefPolicy, ref: str) -> str:
    with pytest.raises(RefusedReference) as caught:
        policy.check(ref)
    return caught.value.message.replace(ref[:200], "REF")


def test_defaults_allow_registries_only(images: Path) -> None:
    policy = RefPolicy.from_args(())
    assert policy.check("registry.invalid/os:1") == "registry.invalid/os:1"
    assert policy.check("docker://registry.invalid/os@sha256:" + "a" * 64).startswith("docker://")
    for ref in (f"oci-archive:{images}/os.ociarchive", "oci:/srv", "containers-storage:localhost/os"):
        _refusal(policy, ref)


def test_local_paths_under_the_allowed_directory(images: Path, tmp_path: Path) -> None:
    policy = RefPolicy.from_args([f"oci-archive:{images}/*"])
    assert policy.check(f"oci-archive:{images}/os.ociarchive") == f"oci-archive:{images}/os.ociarchive"
    assert policy.check(f"oci-archive:{images}/not-yet-there:v1") == f"oci-archive:{images}/not-yet-there:v1"
    assert policy.check("registry.invalid/os:1")  # registries stay allowed without a registry pattern
    # an operator's directory that is a symlink: references are matched (and given to the builder) resolved
    linked = RefPolicy.from_args([f"oci-archive:{tmp_path}/link-to-images/*"])
    assert linked.check(f"oci-archive:{tmp_path}/link-to-images/os.ociarchive") == (
        f"oci-archive:{images}/os.ociarchive"
    )
    existing, missing = [], []
    for ref in (
        f"oci-archive:{tmp_path}/secret",  # exists, outside
        f"oci-archive:{images}/../../secret",  # `..` out of the directory
        f"oci-archive:{images}/escape/passwd",  # a symlink in the directory pointing out
        "oci-archive:/etc/passwd",
        f"oci:{images}/os.ociarchive",  # another transport
        "oci-archive:relative/path",
        f"oci-archive:{tmp_path}/link-to-images/os.ociarchive",  # a way in from outside the directory
    ):
        existing.append(_refusal(policy, ref))
    for ref in (
        f"oci-archive:{tmp_path}/no-such",
        f"oci-archive:{images}/../../no-such",
        f"oci-archive:{images}/escape/no-such",
        "oci-archive:/etc/no-such",
        f"oci:{images}/no-such",
        "oci-archive:relative/no-such",
        f"oci-archive:{tmp_path}/link-to-images/no-such",
    ):
        missing.append(_refusal(policy, ref))
    assert existing == missing  # nothing tells whether a path exists
    assert len(set(existing)) == 1


def test_registry_patterns_and_containers_storage() -> None:
    policy = RefPolicy.from_args(["docker://registry.invalid/team/*", "containers-storage:localhost/os*"])
    assert policy.check("registry.invalid/team/os:1") == "registry.invalid/team/os:1"
    _refusal(policy, "registry.invalid/other/os:1")
    assert policy.check("containers-storage:localhost/os:1") == "containers-storage:localhost/os:1"
    _refusal(policy, "containers-storage:[overlay@/root/storage+/run/x]localhost/os:1")


@pytest.mark.parametrize(
    "pattern", ["oci-archive:relative/*", "oci:/", "ftp:/x/*", "oci-archive:/srv", "docker://"]
)
def test_bad_patterns_are_one_line_errors(pattern: str) -> None:
    with pytest.raises(ImgbuildError, match="--allow-ref"):
        RefPolicy.from_args([pattern])


def test_the_service_gives_the_same_answer_existing_or_not(images: Path, tmp_path: Path) -> None:
    with running_service(
        tmp_path / "state", builder=standin_builder(tmp_path), allow_refs=(f"oci-archive:{images}/*",)
    ) as (service, cli):
        cc = Commands(cli)
        cc.push(blueprint())
        answers = []
        for ref in (
            "oci-archive:/etc/passwd",
            "oci-archive:/etc/no-such-file",
            "oci:/root",
            "oci:/no-such-dir",
        ):
            answer = cc.start_ostree("demo", "qcow2", url=ref)
            answers.append(json.dumps(answer).replace(ref, "REF"))
        assert len(set(answers)) == 1 and "not allowed by this service" in answers[0]
        assert service.store.composes() == []
        started = cc.start_ostree("demo", "qcow2", url=f"oci-archive:{images}/../images/os.ociarchive")
        assert cc.info(started["build_id"])["container_ref"] == f"oci-archive:{images}/os.ociarchive"


def test_a_default_ref_outside_the_policy_is_refused_at_start(tmp_path: Path) -> None:
    with (
        pytest.raises(ImgbuildError, match="--default-ref"),
        running_service(tmp_path / "state", default_ref="oci-archive:/etc/passwd"),
    ):
        pass
    assert not (tmp_path / "state").exists()
