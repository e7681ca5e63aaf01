"""The example OS (builder/example.py, examples/debian/): builds or reuses both architectures and checks the
ostree layout of each commit, the initramfs, the boot self-test script (run for real, in a chroot of the
checked-out commit: natively or through qemu-user), the tmpfiles.d entries that recreate /var, and the
ostree-native OCI archive (inspected, and encapsulated twice to the same digest).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.example import (
    DPKG_DIR,
    SELFTEST_KARG,
    SELFTEST_MARKER,
    ExampleImage,
    build_example,
    example_manifest,
)
from tests.imagebuilds import imgbuild

MAX_TREE_BYTES = 500 * 1000 * 1000
CPIO_NEWC = b"070701"


@pytest.fixture(scope="module", params=[Arch.X86_64, Arch.AARCH64], ids=lambda a: a.value)
def example(request: pytest.FixtureRequest) -> ExampleImage:
    arch: Arch = request.param
    return build_example(arch)


@pytest.fixture(scope="module")
def checkout(example: ExampleImage) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="example-checkout-") as tmp:
        root = Path(tmp) / "root"
        run.run(["ostree", f"--repo={example.repo}", "checkout", example.commit, root])
        yield root


def _cpio_names(data: bytes) -> list[str]:
    """Member names of a newc cpio archive (what dracut writes)."""
    names, offset = [], 0
    while offset < len(data):
        assert data[offset : offset + 6] == CPIO_NEWC, f"not a newc cpio at {offset}"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        filesize, namesize = fields[6], fields[11]
        name = data[offset + 110 : offset + 110 + namesize - 1].decode()
        offset = (offset + 110 + namesize + 3) & ~3
        offset = (offset + filesize + 3) & ~3
        if name == "TRAILER!!!":
            break
        names.append(name)
    return names


def test_commit_metadata(example: ExampleImage) -> None:
    shown = run.run(
        ["ostree", f"--repo={example.repo}", "show", "--print-metadata-key=ostree.linux", example.ref]
    )
    assert shown.out.strip() == f"'{example.kernel}'"
    bootable = run.run(
        ["ostree", f"--repo={example.repo}", "show", "--print-metadata-key=ostree.bootable", example.ref]
    )
    assert bootable.out.strip() == "true"
    version = run.run(
        ["ostree", f"--repo={example.repo}", "show", "--print-metadata-key=version", example.ref]
    )
    assert re.fullmatch(r"'12\.\d+\.\d{8}'", version.out.strip())
    rev = run.run(["ostree", f"--repo={example.repo}", "rev-parse", example.ref]).out.strip()
    assert rev == example.commit


def test_ostree_layout(example: ExampleImage, checkout: Path) -> None:
    root = checkout
    assert not (root / "etc").exists()
    assert (root / "usr/etc/os-release").is_file() and not (root / "usr/etc/os-release").is_symlink()
    assert "bookworm" in (root / "usr/etc/os-release").read_text()
    assert (root / "usr/etc/machine-id").read_bytes() == b""
    moddir = root / "usr/lib/modules" / example.kernel
    assert (moddir / "vmlinuz").stat().st_size > 1_000_000
    assert (moddir / "initramfs.img").stat().st_size > 1_000_000
    assert sorted(p.name for p in (root / "usr/lib/modules").iterdir()) == [example.kernel]
    for empty in ("boot", "var", "sysroot", "dev", "proc", "sys", "run", "tmp"):
        assert (root / empty).is_dir() and not any((root / empty).iterdir()), empty
    links = {
        "ostree": "sysroot/ostree",
        "home": "var/home",
        "root": "var/roothome",
        "opt": "var/opt",
        "srv": "var/srv",
        "mnt": "var/mnt",
        "media": "run/media",
        "usr/local": "../var/usrlocal",
    }
    for name, target in links.items():
        assert (root / name).is_symlink() and str((root / name).readlink()) == target, name
    dpkg = root / DPKG_DIR
    assert "Package: systemd\n" in (dpkg / "status").read_text()
    assert (dpkg / "info" / "systemd.list").is_file()
    shadow = {
        line.split(":")[0]: line.split(":")[1] for line in (root / "usr/etc/shadow").read_text().splitlines()
    }
    assert shadow["root"].startswith("!"), "root's password must be locked"
    # The bootloader files the OS carries for the disk-image builder.
    platforms = {"x86_64": ["i386-pc", "x86_64-efi"], "aarch64": ["arm64-efi"]}[example.arch.value]
    for platform in platforms:
        assert (root / "usr/lib/grub" / platform / "normal.mod").is_file(), platform


def test_selftest_unit_enabled(checkout: Path) -> None:
    unit = checkout / "usr/lib/systemd/system/imgbuild-selftest.service"
    assert f"ConditionKernelCommandLine={SELFTEST_KARG}" in unit.read_text()
    wants = checkout / "usr/etc/systemd/system/multi-user.target.wants/imgbuild-selftest.service"
    assert wants.is_symlink()
    assert (checkout / "usr/libexec/imgbuild-selftest").stat().st_mode & 0o111


def test_initramfs_has_ostree_module(example: ExampleImage, checkout: Path) -> None:
    data = gzip.decompress((checkout / "usr/lib/modules" / example.kernel / "initramfs.img").read_bytes())
    names = set(_cpio_names(data))
    assert "usr/lib/ostree/ostree-prepare-root" in names
    assert "etc/systemd/system/initrd-root-fs.target.wants/ostree-prepare-root.service" in names
    assert "usr/lib/systemd/systemd" in names
    modules = {Path(n).name for n in names if n.endswith(".ko")}
    for module in ("virtio_blk.ko", "ext4.ko", "xfs.ko", "btrfs.ko"):
        assert module in modules, module


def _selftest_output(root: Path, cmdline: str) -> str:
    """Run the image's own self-test script in a chroot of the checkout, with a fake /proc/cmdline and
    /dev/console (plain files: nothing is mounted)."""
    (root / "proc/cmdline").write_text(cmdline + "\n")
    console = root / "dev/console"
    console.write_text("")
    try:
        # `systemctl poweroff` fails without systemd running: the line must be written before it.
        run.run(["chroot", root, "/usr/libexec/imgbuild-selftest"], check=False)
        return console.read_text()
    finally:
        (root / "proc/cmdline").unlink()
        console.unlink()


def test_selftest_prints_booted_commit(example: ExampleImage, checkout: Path) -> None:
    bootcsum = "a" * 64
    deploy = checkout / "sysroot/ostree/deploy/default/deploy" / f"{example.commit}.0"
    deploy.mkdir(parents=True)
    bootlink = checkout / "sysroot/ostree/boot.1.1/default" / bootcsum / "0"
    bootlink.parent.mkdir(parents=True)
    bootlink.symlink_to(f"../../../deploy/default/deploy/{example.commit}.0")
    (checkout / "sysroot/ostree/boot.1").symlink_to("boot.1.1")
    try:
        cmdline = (
            f"root=UUID=1234 rw ostree=/ostree/boot.1/default/{bootcsum}/0 console=ttyS0 {SELFTEST_KARG}"
        )
        lines = [line for line in _selftest_output(checkout, cmdline).splitlines() if line]
        assert lines == [f"{SELFTEST_MARKER} commit={example.commit} cmdline={cmdline}"]
        bad = f"root=UUID=1234 ostree=/ostree/boot.1/default/{'b' * 64}/0 {SELFTEST_KARG}"
        lines = [line for line in _selftest_output(checkout, bad).splitlines() if line]
        assert lines == [f"{SELFTEST_MARKER} commit=unknown cmdline={bad}"]
    finally:
        run.run(["rm", "-rf", "--one-file-system", checkout / "sysroot/ostree"])


def test_tmpfiles_recreate_var(checkout: Path) -> None:
    """systemd-tmpfiles (the host's, on the checkout) fills the empty /var from /usr/share/factory/var."""
    conf = checkout / "usr/lib/tmpfiles.d/imgbuild-factory-var.conf"
    assert f"L /var/lib/dpkg - - - - /{DPKG_DIR}" in conf.read_text()
    # /etc is where tmpfiles reads users from; give it the image's.
    (checkout / "etc").symlink_to("usr/etc")
    try:
        run.run(["systemd-tmpfiles", f"--root={checkout}", "--create", "--prefix=/var"], check=False)
        assert str((checkout / "var/lib/dpkg").readlink()) == f"/{DPKG_DIR}"
        assert (checkout / "var/roothome/.bashrc").is_file()
        assert (checkout / "var/roothome").stat().st_mode & 0o777 == 0o700
        assert (checkout / "var/usrlocal/bin").is_dir()
        assert (checkout / "var/tmp").is_dir()
    finally:
        (checkout / "etc").unlink()
        run.run(["rm", "-rf", "--one-file-system", checkout / "var"])
        (checkout / "var").mkdir()


def test_size_and_manifest(example: ExampleImage) -> None:
    manifest = example_manifest(example)
    assert manifest["commit"] == example.commit
    assert manifest["tree_bytes"] < MAX_TREE_BYTES
    packages = manifest["packages"]
    assert f"linux-image-{example.kernel}:{example.arch.debian}" in packages
    assert "ostree-boot:" + example.arch.debian in packages


def test_archive_is_bootable_chunked_image(example: ExampleImage) -> None:
    assert example.reference == f"oci-archive:{example.path}"
    with tempfile.TemporaryDirectory(prefix="example-inspect-") as cache:
        shown = imgbuild(
            ["inspect", "--json", f"--arch={example.arch.value}", f"--cache={cache}", example.reference]
        )
    summary = json.loads(shown.out)
    assert summary["architecture"] == example.arch.value
    assert summary["layout"] == "chunked"
    assert summary["bootable"] is True
    assert summary["ostree_commit"] == example.commit
    assert summary["kernels"] == [example.kernel]
    assert summary["labels"]["ostree.linux"] == example.kernel
    assert summary["labels"]["containers.bootc"] == "1"
    assert len(summary["layers"]) > 2, "chunked by package"


def test_encapsulation_is_reproducible(example: ExampleImage) -> None:
    from builder.ostree.encapsulate import encapsulate

    # The archive beside the example was written by this same encapsulator (its sources are part of the
    # cache key of the archive): a second encapsulation of the commit must give the same manifest digest.
    with tempfile.TemporaryDirectory(prefix="example-encap-") as tmp:
        again = encapsulate(example.repo, example.commit, f"oci:{tmp}/layout:latest", arch=example.arch)
    assert again.manifest_digest == example_manifest(example)["manifest_digest"]


def test_rebuild_is_cached(example: ExampleImage) -> None:
    again = build_example(example.arch)
    assert again.cached
    assert again == dataclasses.replace(example, cached=True)
