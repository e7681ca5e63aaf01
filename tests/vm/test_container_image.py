"""imgbuild's container image builds a qcow2 from the host's containers-storage that boots, as users run it:
`podman run --rm --privileged -v ./output:/output -v /var/lib/containers/storage:... IMAGE qcow2 REF`."""

from __future__ import annotations

import json
import re
from pathlib import Path

from builder.example import SELFTEST_KARG, SELFTEST_MARKER, ExampleImage
from tests.containerimage import HOST_STORAGE, into_host_storage, podman
from tests.imagebuilds import check_result, imgbuild


def test_container_builds_a_bootable_qcow2_from_containers_storage(
    tmp_path: Path, example_x86_64: ExampleImage, imgbuild_container: str
) -> None:
    ref = into_host_storage(example_x86_64, "localhost/imgbuild-test-example:latest")
    out = tmp_path / "output"
    out.mkdir()
    pod = podman(tmp_path)
    done = pod.run(
        "run", "--rm", "--privileged", "-v", f"{out}:/output", "-v", f"{HOST_STORAGE}:{HOST_STORAGE}",
        imgbuild_container, "qcow2", "--progress", "json", ref,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    events = [json.loads(line) for line in done.out.splitlines()]
    assert events[-1]["event"] == "build-end" and events[-1]["status"] == "ok"
    result = check_result(out / "result.json")
    assert result["source"]["reference"] == ref
    disk = out / result["outputs"][0]["path"]
    booted = imgbuild(["boot", disk, "--firmware", "bios", "--timeout", "600", "--append", SELFTEST_KARG])
    line = next((x for x in booted.out.splitlines() if SELFTEST_MARKER in x), None)
    assert line is not None, booted.out[-3000:]
    assert re.search(rf"commit={result['commit']}\b", line), line


def test_container_makes_missing_loop_nodes(
    tmp_path: Path, example_x86_64: ExampleImage, imgbuild_container: str
) -> None:
    # docker-in-docker and some runners give a container no /dev/loop* nodes: remove them all first.
    ref = into_host_storage(example_x86_64, "localhost/imgbuild-test-example:latest")
    out = tmp_path / "output"
    out.mkdir()
    script = (
        "rm -f /dev/loop*; ls /dev | grep -c '^loop' || true; "
        'exec /usr/libexec/imgbuild/entrypoint raw --progress plain "$0"'
    )
    pod = podman(tmp_path)
    done = pod.run(
        "run", "--rm", "--privileged", "-v", f"{out}:/output", "-v", f"{HOST_STORAGE}:{HOST_STORAGE}",
        "--entrypoint", "bash", imgbuild_container, "-c", script, ref,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.out.splitlines()[0] == "0"  # no loop node was left when the entrypoint started
    result = check_result(out / "result.json")
    assert [o["format"] for o in result["outputs"]] == ["raw"]


def test_container_user_error_is_one_line(tmp_path: Path, imgbuild_container: str) -> None:
    pod = podman(tmp_path)
    missing = "containers-storage:localhost/imgbuild-no-such-image:latest"
    done = pod.run("run", "--rm", "--privileged", imgbuild_container, "qcow2", missing)
    assert done.returncode == 2
    err = done.stderr.decode()
    assert err.startswith("imgbuild: error: ") and "Traceback" not in err, err
