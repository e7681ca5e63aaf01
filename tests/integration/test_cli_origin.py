"""What the built system updates from (issue 12): `--target-imgref` is written into the deployment's origin
on the disk, a local source without it warns, bootc-image-builder's `--local` reads containers-storage while
the origin names the registry, and `--chown` gives every file the build wrote to the user who asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from builder import run
from builder.devices import loop_device, mounted
from builder.example import ExampleImage
from tests.imagebuilds import ImageBuilds, imgbuild, leaked_resources, partitions

TARGET = "registry.example/os:latest"
OWNER = (4242, 4343)  # no such user here: numbers are what --chown must write


def _deploy_stage(manifest: dict[str, Any]) -> dict[str, Any]:
    for pipeline in manifest["pipelines"]:
        for stage in pipeline["stages"]:
            if stage["type"] == "ostree.deploy":
                return dict(stage["options"])
    raise AssertionError("no ostree.deploy stage")


def test_target_imgref_is_the_origin_on_the_disk(
    example_x86_64: ExampleImage, images: ImageBuilds, tmp_path: Path
) -> None:
    built = images.multi(
        ["raw"], example_x86_64.reference, "--target-imgref", TARGET, "--chown", f"{OWNER[0]}:{OWNER[1]}"
    )
    out = built.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert _deploy_stage(manifest)["origin"] == f"ostree-unverified-registry:{TARGET}"  # visible in the plan
    # The image is still read from the archive: only what the booted system updates from changed.
    assert manifest["source"]["reference"].startswith("oci-archive:")

    # --chown: the directory and everything the build wrote in it, result.json included.
    written = [out, *out.rglob("*")]
    assert {p.name for p in written} >= {out.name, "disk.raw", "result.json", "manifest.json"}
    assert [p for p in written if (p.stat().st_uid, p.stat().st_gid) != OWNER] == []

    disk = out / "disk.raw"
    root = partitions(disk)[-1]
    commit = json.loads((out / "result.json").read_text())["commit"]
    (tmp_path / "root").mkdir()
    with (
        loop_device(disk, offset=root.start, size=root.size, read_only=True) as dev,
        mounted(dev, tmp_path / "root", fstype="ext4", options=["ro"]) as mnt,
    ):
        origin = (mnt / "ostree/deploy/default/deploy" / f"{commit}.0.origin").read_text()
        aleph = json.loads((mnt / ".imgbuild-aleph.json").read_text())
    assert origin == f"[origin]\ncontainer-image-reference=ostree-unverified-registry:{TARGET}\n"
    assert aleph["image"]["reference"] == f"ostree-unverified-registry:{TARGET}"
    assert leaked_resources(out) == []


def test_a_local_source_without_target_imgref_warns(example_x86_64: ExampleImage) -> None:
    result = imgbuild(["plan", "qcow2", example_x86_64.reference, "--output-format", "json"])
    warnings = [line for line in result.stderr.decode().splitlines() if line.startswith("imgbuild: warning:")]
    assert len(warnings) == 1
    assert "the booted system will not be able to update" in warnings[0]
    assert "--target-imgref" in warnings[0]
    origin = _deploy_stage(json.loads(result.out))["origin"]
    assert origin == f"ostree-unverified-image:{example_x86_64.reference}"


def test_local_reads_containers_storage_and_updates_from_the_registry(example_x86_64: ExampleImage) -> None:
    """bootc-image-builder's habit: `podman build -t REGISTRY/NAME:TAG`, then build `--local` from it."""
    name = "registry.example/imgbuild-test-local:latest"
    archive = example_x86_64.reference.removeprefix("oci-archive:")
    run.run(["skopeo", "copy", "--quiet", f"oci-archive:{archive}", f"containers-storage:{name}"])
    try:
        result = imgbuild(["plan", "qcow2", name, "--local", "--output-format", "json"])
    finally:
        run.run(["skopeo", "delete", f"containers-storage:{name}"], check=False)
    manifest = json.loads(result.out)
    assert manifest["source"]["reference"] == f"containers-storage:{name}"
    assert _deploy_stage(manifest)["origin"] == f"ostree-unverified-registry:{name}"
    assert "warning" not in result.stderr.decode()


def test_output_checked_before_the_fetch(tmp_path: Path) -> None:
    """A reference that would take long to fetch, and an --output that cannot work: refused at once."""
    (tmp_path / "file").write_text("")
    result = imgbuild(
        ["qcow2", "registry.example/never-fetched:1", "--output", tmp_path / "file"], check=False
    )
    assert result.returncode == 2
    assert "is a file, not a directory" in result.stderr.decode()
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
