"""The README's newcomer path, followed as written as far as this machine allows without a registry: the
example OS copied into containers-storage, the README's Containerfile built with podman, the README's
`imgbuild qcow2 containers-storage:...` with its blueprint; then the disk is read (the Containerfile's file
and the blueprint's user are in the deployment). Booting is left to the VM tests (one boot per image).

Image names are made unique (the host's containers-storage is shared) and removed at the end; the example
archive's path is the fixture's."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

from builder import run
from builder.example import ExampleImage
from tests.guestfs_inspect import guest, mount_sysroot
from tests.imagebuilds import check_result, imgbuild

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks() -> list[str]:
    text = README.read_text()
    match = re.search(r"^## From a Containerfile to a booted system\n(.*?)(?=^## )", text, re.S | re.M)
    assert match is not None
    blocks = re.findall(r"^ *```\n(.*?)^ *```", match.group(1), re.S | re.M)
    return ["\n".join(line.strip() for line in re.sub(r"\\\n\s*", " ", b).splitlines()) for b in blocks]


def test_newcomer_path(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    unique = f"imgbuild-readme-{os.getpid()}"
    names = {
        "localhost/debian-ostree:latest": f"localhost/{unique}-base:latest",
        "localhost/my-os:latest": f"localhost/{unique}-my-os:latest",
    }

    def literal(text: str) -> str:
        for old, new in names.items():
            text = text.replace(old, new)
        return text.replace(
            ".cache/examples/x86_64/debian-ostree-x86_64.ociarchive", str(example_x86_64.path)
        )

    blocks = _blocks()
    (copy,) = [b for b in blocks if b.startswith("imgbuild example build")]
    (containerfile,) = [b for b in blocks if b.startswith("FROM ")]
    (podman,) = [b for b in blocks if "podman build" in b]
    (blueprint,) = [b for b in blocks if "[[customizations.user]]" in b]
    (qcow2,) = [b for b in blocks if b.startswith("imgbuild qcow2")]

    (tmp_path / "Containerfile").write_text(literal(containerfile) + "\n")
    (tmp_path / "login.toml").write_text(blueprint + "\n")
    try:
        skopeo = shlex.split(literal(copy.splitlines()[1]))
        assert skopeo[:2] == ["skopeo", "copy"]
        run.run([*skopeo[:2], "--quiet", *skopeo[2:]])
        for line in literal(podman).splitlines():  # echo ... > motd, podman build ...
            run.run(["sh", "-c", line], cwd=tmp_path, timeout=900)
        argv = shlex.split(literal(qcow2))
        assert argv[0] == "imgbuild"
        argv[argv.index("--output") + 1] = str(tmp_path / "output")
        argv[argv.index("--blueprint") + 1] = str(tmp_path / "login.toml")
        imgbuild(argv[1:], env={"IMGBUILD_CACHE": str(tmp_path / "cache")})
    finally:
        for name in names.values():
            run.run(["podman", "rmi", "--force", name], check=False)

    result = check_result(tmp_path / "output" / "result.json")
    assert result["source"]["reference"].startswith("containers-storage:localhost/imgbuild-readme-")
    with guest(tmp_path / "output" / "disk.qcow2") as g:
        mount_sysroot(g)
        (deployment,) = g.glob_expand(f"/ostree/deploy/*/deploy/{result['commit']}.0")
        assert g.cat(f"{deployment}/usr/share/my-os/motd") == "built from my Containerfile\n"
        assert any(line.startswith("me:") for line in g.cat(f"{deployment}/etc/passwd").splitlines())
