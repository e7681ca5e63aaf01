"""The container image's recipe: what mmdebstrap is asked for and what the image's config says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder import container_image
from builder.container_image import ENTRYPOINT, _config, mmdebstrap_argv, packages


def test_packages_are_what_a_build_needs() -> None:
    wanted = set(packages())
    assert {"ostree", "skopeo", "python3-gi", "qemu-utils", "grub-pc-bin", "python3-jsonschema"} <= wanted
    assert not {"qemu-system-x86", "libguestfs-tools", "mmdebstrap"} & wanted  # builds only: no VMs


def test_mmdebstrap_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        container_image, "read_sources", lambda: ("deb http://mirror.invalid/debian bookworm main",)
    )
    argv = mmdebstrap_argv(Path("/w/imgbuild-0.1.0-py3-none-any.whl"), Path("/w/rootfs.tar"))
    assert argv[:4] == ["mmdebstrap", "--mode=root", "--format=tar", "--variant=minbase"]
    assert "--skip=output/dev" in argv and argv[-3:-1] == ["bookworm", "/w/rootfs.tar"]
    hooks = " ".join(a for a in argv if a.startswith("--customize-hook="))
    assert "zipfile -e /w/imgbuild-0.1.0-py3-none-any.whl" in hooks
    assert "--invalidation-mode checked-hash" in hooks  # byte code without timestamps
    assert ENTRYPOINT in hooks and "resolv.conf" in hooks


def test_config_has_no_run_dependent_data() -> None:
    one = _config("sha256:" + "a" * 64, 1700000000)
    assert one == _config("sha256:" + "a" * 64, 1700000000)
    config = json.loads(one)
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert config["config"]["Entrypoint"] == [ENTRYPOINT]
    assert "IMGBUILD_CACHE=/var/cache/imgbuild" in config["config"]["Env"]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + "a" * 64]
