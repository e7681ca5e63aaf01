"""`imgbuild cache prune --all` while a build runs (held at the start of ostree.deploy, after its import and
before the deployment pulls the commit out of the cache): the image in use is kept and the build completes
with an intact image; the image nobody uses is removed; `cache info`'s sizes match `du -sb` all along."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from builder import run
from builder.example import ExampleImage
from tests.guestfs_inspect import guest, mount_sysroot
from tests.imagebuilds import ROOT, check_result, imgbuild, leaked_resources


def _json(args: list[str], env: dict[str, str]) -> Any:
    return json.loads(imgbuild(args, env=env).stdout)


def _du(path: Path) -> int:
    return int(run.run(["du", "-sb", path]).out.split()[0])


def _info(cache: Path, env: dict[str, str]) -> dict[str, Any]:
    info: dict[str, Any] = _json(["cache", "info", "--json"], env)
    assert info["cache"] == str(cache)
    assert info["total"] == _du(cache), "cache info's total is not what du -sb counts"
    assert sum(info["parts"].values()) == info["total"]
    return info


def _by_reference(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {image["reference"]: image for image in info["images"]}


def test_prune_during_a_build_keeps_what_it_uses(
    example_x86_64: ExampleImage, example_aarch64: ExampleImage, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    env = {"IMGBUILD_CACHE": str(cache)}
    # An image nobody uses: the aarch64 example, fetched and imported by planning it.
    imgbuild(["plan", "qcow2", example_aarch64.reference, "-o", tmp_path / "aarch64.json"], env=env)
    unused = example_aarch64.reference

    gate, out = tmp_path / "gate", tmp_path / "out"
    gate.touch()
    argv = [sys.executable, "-m", "builder", "qcow2", example_x86_64.reference, "--output", str(out)]
    build_env = {**env, "PYTHONPATH": str(ROOT), "IMGBUILD_PAUSE_STAGE": f"ostree.deploy:{gate}"}
    with (
        open(tmp_path / "build.log", "wb") as log,
        run.spawn(argv, env=build_env, stdout=run.DEVNULL, stderr=log, check=False) as build,
    ):
        deadline = time.monotonic() + 900
        while not Path(f"{gate}.reached").exists():
            assert build.poll() is None, (tmp_path / "build.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.2)

        before = _by_reference(_info(cache, env))
        in_use = before[example_x86_64.reference]
        assert in_use["in_use"] == [build.pid]
        assert before[unused]["in_use"] == [] and before[unused]["exclusive"] > 100 << 20
        unused_manifest = before[unused]["manifest_digest"]

        pruned = _json(["cache", "prune", "--all", "--json"], env)
        assert pruned["removed"] == [unused]
        assert pruned["in_use"] == [example_x86_64.reference]
        assert pruned["freed"] >= before[unused]["exclusive"]

        after = _info(cache, env)
        assert list(_by_reference(after)) == [example_x86_64.reference]
        assert not (cache / "oci" / "blobs" / "sha256" / unused_manifest.partition(":")[2]).exists()
        assert after["total"] == pruned["after"]

        gate.unlink()
        rc = build.wait(900)
    assert rc == 0, (tmp_path / "build.log").read_text()
    result = check_result(out / "result.json")
    assert result["commit"] == in_use["commit"]
    run.run(["qemu-img", "check", out / "disk.qcow2"])
    with guest(out / "disk.qcow2") as g:
        mount_sysroot(g)
        (deployment,) = g.glob_expand(f"/ostree/deploy/*/deploy/{in_use['commit']}.0")
        assert "ID=" in g.cat(f"{deployment}/usr/lib/os-release")
    assert leaked_resources(tmp_path) == []

    # Nobody uses it now: prune takes it, and the repository keeps no object.
    assert not list((cache / "leases").iterdir())
    pruned = _json(["cache", "prune", "--all", "--json"], env)
    assert pruned["removed"] == [example_x86_64.reference] and pruned["in_use"] == []
    final = _info(cache, env)
    assert final["images"] == [] and final["fetched"] == []
    assert [p for p in (cache / "repo" / "objects").rglob("*") if p.is_file()] == []
    assert list((cache / "oci" / "blobs" / "sha256").iterdir()) == []
    assert list((cache / "stages").iterdir()) == []
