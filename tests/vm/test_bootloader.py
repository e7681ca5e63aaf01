"""GRUB really boots: a disk made by builder.disk and builder.bootloader, started by builder.vm.

The disk is laid out as bootc-image-builder lays out x86_64 (BIOS boot, ESP, /boot, root), /boot holds a
Debian kernel, a busybox initramfs and an ostree-style BLS entry (under `loader -> loader.1`); GRUB is
installed for BIOS (core.img patched into the BIOS boot partition) and UEFI (BOOTX64.EFI in the FAT ESP),
with the menuentry grub.cfg Debian's GRUB needs. The initramfs prints its command line and powers off, so
each boot proves partitioning, the FAT ESP, the core.img patching, GRUB EFI and grub.cfg generation,
independently of the ostree deployment.
"""

from __future__ import annotations

import io
import json
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder import cli, paths, run
from builder.arch import Arch
from builder.bootloader import kargs
from builder.bootloader.grub_bios import install_grub_bios
from builder.bootloader.grub_cfg import parse_bls_entries, write_grub_cfg
from builder.bootloader.grub_efi import build_esp_tree
from builder.devices import loop_device
from builder.disk import partition as pt
from builder.disk.esp import populate_esp
from builder.disk.mkfs import make_filesystem
from builder.vm import KVM_PROBE_SECONDS, BootResult, BootTimeout, Firmware, boot, kvm_usable
from tests.bootpool import GUEST_SMP, Booted, Outcomes, boot_all, boot_image

MIB = 1024 * 1024
BOOT_FS_UUID = "0b0e0b0e-1111-4222-8333-444455556666"
ROOT_FS_UUID = "2007f5e0-1111-4222-8333-444455556666"
BOOTED = "IMGBUILD-TEST-BOOTED"
SELFTEST = "IMGBUILD-SELFTEST-OK"
HOST_GRUB = Path("/usr/lib/grub")

INIT = f"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
read -r cmdline < /proc/cmdline
echo "{BOOTED} cmdline=[$cmdline]"
case " $cmdline " in *" imgbuild.selftest=1 "*) echo "{SELFTEST}" ;; esac
case " $cmdline " in *" imgbuild.test.hang=1 "*) while :; do /bin/busybox sleep 60; done ;; esac
/bin/busybox poweroff -f
"""


def newc_cpio(entries: list[tuple[str, int, bytes, int]]) -> bytes:
    """A cpio archive in the kernel's newc format: (name, mode, data, rdev-minor-major packed) entries."""
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], start=1):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(encoded), 0]
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(encoded)
        pad()
        out.write(data)
        pad()
    return out.getvalue()


def busybox_initramfs(busybox: Path) -> bytes:
    console = (5 << 8) | 1  # /dev/console is char 5:1
    return newc_cpio(
        [
            ("dev", stat.S_IFDIR | 0o755, b"", 0),
            ("dev/console", stat.S_IFCHR | 0o600, b"", console),
            ("proc", stat.S_IFDIR | 0o755, b"", 0),
            ("bin", stat.S_IFDIR | 0o755, b"", 0),
            ("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes(), 0),
            ("init", stat.S_IFREG | 0o755, INIT.encode(), 0),
        ]
    )


def debian_package(name: str, arch: Arch) -> Path:
    """Debian's package `name` for `arch`, downloaded (apt-get download) and extracted once into the cache.

    A foreign architecture needs `dpkg --add-architecture arm64 && apt-get update` on the host first.
    """
    qualified = name if arch is Arch.host() else f"{name}:{arch.debian}"
    if arch is not Arch.host():
        ensure_foreign_architecture(arch)
    cache = paths.PROJECT_ROOT / ".cache" / "test-debs" / f"{name}_{arch.debian}"
    if (cache / ".done").is_file():
        return cache
    with tempfile.TemporaryDirectory() as tmp:
        run.run(
            ["apt-get", "download", qualified], cwd=tmp, hint="a foreign arch needs dpkg --add-architecture"
        )
        staging = Path(tmp) / "x"
        run.run(["dpkg-deb", "-x", next(Path(tmp).glob("*.deb")), staging])
        shutil.rmtree(cache, ignore_errors=True)
        cache.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staging, cache)
    (cache / ".done").touch()
    return cache


def ensure_foreign_architecture(arch: Arch) -> None:
    """Let apt see `arch`'s packages (ENVIRONMENT.md: dpkg --add-architecture, then apt-get update)."""
    if arch.debian in run.run(["dpkg", "--print-foreign-architectures"]).out.split():
        return
    run.run(["dpkg", "--add-architecture", arch.debian])
    run.run(["apt-get", "update", "-qq"])


def debian_kernel(arch: Arch) -> Path:
    """The vmlinuz of Debian's current kernel package for `arch`."""
    meta = f"linux-image-{arch.debian}"
    if arch is not Arch.host():
        ensure_foreign_architecture(arch)
        meta += f":{arch.debian}"
    depends = run.run(["apt-cache", "depends", meta]).out
    package = next(
        line.split()[-1].split(":")[0]
        for line in depends.splitlines()
        if line.strip().startswith("Depends: linux-image-")
    )
    return sorted((debian_package(package, arch) / "boot").glob("vmlinuz-*"))[-1]


def make_boot_tree(tree: Path, kernel: Path, initramfs: bytes, options: str) -> None:
    """/boot as ostree 2022.7 leaves it: kernel under ostree/, BLS entry under loader.1, loader symlink."""
    kver = kernel.name.removeprefix("vmlinuz-")
    kdir = tree / "ostree" / "test-0123abcd"
    kdir.mkdir(parents=True)
    shutil.copyfile(kernel, kdir / f"vmlinuz-{kver}")
    (kdir / f"initramfs-{kver}.img").write_bytes(initramfs)
    entries = tree / "loader.1" / "entries"
    entries.mkdir(parents=True)
    (entries / "ostree-1-test.conf").write_text(
        "title Test OS 12 (ostree:0)\nversion 1\n"
        f"options {options} ostree=/ostree/boot.1/test/0123abcd/0\n"
        f"linux /ostree/test-0123abcd/vmlinuz-{kver}\ninitrd /ostree/test-0123abcd/initramfs-{kver}.img\n"
    )
    (tree / "loader").symlink_to("loader.1")
    (tree / "boot").symlink_to(".")


@pytest.fixture(scope="module")
def x86_disk() -> Iterator[Path]:
    kernel = debian_kernel(Arch.X86_64)
    initramfs = busybox_initramfs(Path("/bin/busybox"))
    with tempfile.TemporaryDirectory(prefix="imgbuild-test-bootdisk-") as tmp:
        image = Path(tmp) / "disk.raw"
        specs = [
            pt.PartitionSpec(
                "BIOS-BOOT", pt.BIOS_BOOT, MIB, "0b105b00-1111-4222-8333-444455556666", bootable=True
            ),
            pt.PartitionSpec("EFI-SYSTEM", pt.ESP, 501 * MIB, "0e5f0e5f-1111-4222-8333-444455556666"),
            pt.PartitionSpec("boot", pt.XBOOTLDR, 200 * MIB, "0b0070b0-1111-4222-8333-444455556666"),
            pt.PartitionSpec("root", pt.ROOT_X86_64, None, "2007aaaa-1111-4222-8333-444455556666"),
        ]
        bios, esp, boot_part, root = pt.create_gpt(
            image, 800 * MIB, specs, disk_guid="d15cd15c-1111-4222-8333-444455556666"
        )
        boot_tree = Path(tmp) / "boot"
        make_boot_tree(boot_tree, kernel, initramfs, f"root=UUID={ROOT_FS_UUID} rw console=ttyS0 quiet")
        entries = parse_bls_entries(boot_tree)
        write_grub_cfg(boot_tree, entries=entries, use_blscfg=False, boot_fs_uuid=BOOT_FS_UUID)
        make_filesystem(image, boot_part, "ext4", uuid=BOOT_FS_UUID, label="boot", root_dir=boot_tree)
        make_filesystem(image, root, "ext4", uuid=ROOT_FS_UUID, label="root")
        make_filesystem(image, esp, "vfat", uuid="7B77-95E7", label="EFI-SYSTEM")
        install_grub_bios(
            image,
            bios_boot=bios,
            boot_part=boot_part,
            boot_fs_uuid=BOOT_FS_UUID,
            grub_dir=HOST_GRUB / "i386-pc",
            boot_fs="ext4",
        )
        esp_tree = Path(tmp) / "esp"
        build_esp_tree(
            esp_tree,
            Arch.X86_64,
            grub_dir=HOST_GRUB / "x86_64-efi",
            boot_fs_uuid=BOOT_FS_UUID,
            boot_fs="ext4",
        )
        populate_esp(image, esp, esp_tree)
        yield image


def _fingerprint(image: Path) -> tuple[int, int]:
    st = image.stat()
    return st.st_size, st.st_mtime_ns


@pytest.fixture(scope="module")
def booted(
    x86_disk: Path, fingerprint: tuple[int, int], tmp_path_factory: pytest.TempPathFactory
) -> Outcomes[str, object]:
    """The module's three boots, two at a time (tests/bootpool.py): BIOS through the CLI, UEFI with
    appended kernel arguments, and a guest that hangs until the timeout (as a qcow2, which also proves the
    format detection and the overlay's backing format). `fingerprint` is taken before them."""
    qcow2 = tmp_path_factory.mktemp("bootloader") / "disk.qcow2"
    run.run(["qemu-img", "convert", "-O", "qcow2", x86_disk, qcow2])
    jobs: dict[str, Callable[[], object]] = {
        "bios-cli": lambda: boot_image(x86_disk, "--firmware", "bios", "--marker", BOOTED, timeout=240),
        "uefi": lambda: boot(
            x86_disk,
            arch=Arch.X86_64,
            firmware=Firmware.UEFI,
            timeout=300,
            smp=GUEST_SMP,
            marker=SELFTEST,
            append="imgbuild.selftest=1",
            console=None,
        ),
        # The guest is told to hang instead of powering off, so the timeout is what ends the boot.
        "timeout": lambda: boot(
            qcow2,
            arch=Arch.X86_64,
            firmware=Firmware.BIOS,
            timeout=20,
            smp=GUEST_SMP,
            marker="NEVER-PRINTED",
            append="imgbuild.test.hang=1",
        ),
    }
    return boot_all(jobs)


@pytest.fixture(scope="module")
def fingerprint(x86_disk: Path) -> tuple[int, int]:
    """The disk's size and mtime before any boot."""
    return _fingerprint(x86_disk)


def test_bios_boot_through_the_cli(
    x86_disk: Path, fingerprint: tuple[int, int], booted: Outcomes[str, object]
) -> None:
    out = booted.outcome("bios-cli")
    assert isinstance(out, Booted)
    assert "Test OS 12 (ostree:0)" in out.console  # GRUB's menu, on the serial console, on stdout
    assert f"{BOOTED} cmdline=[" in out.console
    assert (
        f"root=UUID={ROOT_FS_UUID} rw console=ttyS0 quiet ostree=/ostree/boot.1/test/0123abcd/0]"
        in out.console
    )
    assert f"{BOOTED!r} seen after" in out.messages
    assert _fingerprint(x86_disk) == fingerprint  # qemu wrote to the overlay only


def test_uefi_boot_with_appended_kernel_args(
    x86_disk: Path, fingerprint: tuple[int, int], booted: Outcomes[str, object]
) -> None:
    result = booted.outcome("uefi")
    assert isinstance(result, BootResult)
    assert result.marker_line == SELFTEST
    line = next(line for line in result.console_tail.splitlines() if line.startswith(BOOTED))
    assert f"root=UUID={ROOT_FS_UUID}" in line
    assert line.count("imgbuild.selftest=1") == 1  # /boot/boot -> . did not get it appended twice
    assert _fingerprint(x86_disk) == fingerprint


def test_timeout_names_the_wait_and_the_last_lines(booted: Outcomes[str, object]) -> None:
    with pytest.raises(
        BootTimeout, match=r"no 'NEVER-PRINTED' on the console within 20 s; last lines:"
    ) as caught:
        booted.outcome("timeout")
    assert "GNU GRUB" in str(caught.value) or "Booting" in str(caught.value) or BOOTED in str(caught.value)


def test_cli_refuses_a_missing_or_non_image_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["boot", str(tmp_path / "missing.qcow2")]) == 2
    assert "missing.qcow2 does not exist" in capsys.readouterr().err
    text = tmp_path / "notes.txt"
    text.write_text("not a disk\n")
    assert cli.main(["boot", str(text)]) == 2
    err = capsys.readouterr().err
    assert "is too small to be a disk image" in err and len(err.strip().splitlines()) == 1
    text.write_bytes(b"x" * (2 * 1024 * 1024))
    assert cli.main(["boot", str(text)]) == 2
    assert "has no MBR or GPT partition table" in capsys.readouterr().err


def test_kvm_probe_answers_quickly_and_is_cached() -> None:
    kvm_usable.cache_clear()
    started = time.monotonic()
    first = kvm_usable()
    assert time.monotonic() - started < KVM_PROBE_SECONDS + 3
    started = time.monotonic()
    assert kvm_usable() is first
    assert time.monotonic() - started < 0.01


def test_guestfs_edit_matches_the_fuse_edit(x86_disk: Path, tmp_path: Path) -> None:
    """The libguestfs path (used without root) edits the same files as the FUSE path the boots use."""
    results = {}
    for way in ("guestfs", "fuse"):
        overlay = tmp_path / f"{way}.qcow2"
        run.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", x86_disk, "-F", "raw", overlay])
        if way == "guestfs":
            edited = kargs._append_through_guestfs(overlay, "x.y=1", tcg=not kvm_usable())
        else:
            edited = kargs._append_through_fuse(overlay, "x.y=1")
        assert edited == 2  # the BLS entry and grub.cfg, each once despite /boot/boot -> .
        with kargs._raw_export(overlay) as raw:
            table = json.loads(run.run(["sfdisk", "--json", raw]).out)["partitiontable"]
            boot_part = next(p for p in table["partitions"] if p["name"] == "boot")
            start, size = boot_part["start"] * 512, boot_part["size"] * 512
            with loop_device(raw, offset=start, size=size, read_only=True) as dev:
                results[way] = [
                    run.run(["debugfs", "-R", f"cat {path}", dev]).out
                    for path in ("/grub2/grub.cfg", "/loader.1/entries/ostree-1-test.conf")
                ]
    assert results["guestfs"] == results["fuse"]
    grub_cfg, entry = results["fuse"]
    assert grub_cfg.count("x.y=1") == 1 and entry.count("x.y=1") == 1
