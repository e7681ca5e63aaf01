"""Benchmark: the installer ISO against the raw image it carries, measured in the same run.

Size: the ISO against the raw disk compressed whole with zstd (level 3, the payload's level: what one would
ship instead, `disk.raw.zst`), and the payload inside the ISO.
Install time: the installer ISO booted from a CD (SeaBIOS, unattended, an empty 16 GiB virtio disk: GRUB,
kernel, write, verify, move the GPT, grow root, power off), against a plain copy of the raw image to the
same kind of disk inside the same kind of VM: the installer's own kernel and busybox booted directly with
the raw disk attached as a second virtio disk, running `dd if=/dev/vdb of=/dev/vda bs=1M`, then power off.
Both are timed from qemu's start to its exit; the ratio is installer/copy. TCG here: both are slow, the
ratio is what matters.
Run as root: `.venv/bin/python benchmarks/iso_bench.py [--arch x86_64]` (x86_64 only for the copy VM).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from builder import run, vm  # noqa: E402
from builder.arch import Arch  # noqa: E402
from builder.example import build_example  # noqa: E402
from builder.installer.initramfs import _cpio  # noqa: E402
from builder.installer.tools import installer_tools  # noqa: E402

BLUEPRINT = ROOT / "tests" / "data" / "installer" / "unattended.toml"
COPY_INIT = """#!/bin/sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s
for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m 2>/dev/null; done
while [ ! -b /dev/vdb ]; do sleep 0.2; done
dd if=/dev/vdb of=/dev/vda bs=1M conv=fsync
echo COPY-DONE
poweroff -f
"""


def _zstd_size(raw: Path, dest: Path) -> int:
    """Bytes of the raw disk compressed whole (as a stream: zeros too) with the payload's level."""
    compressor = zstandard.ZstdCompressor(level=3, threads=-1)
    with open(raw, "rb") as src, open(dest, "wb") as out:
        compressor.copy_stream(src, out)
    size = dest.stat().st_size
    dest.unlink()
    return size


def _copy_initrd(iso_initrd_dir: Path, work: Path) -> Path:
    """The installer's busybox and drivers with an /init that only dd's the raw disk."""
    root = work / "copyroot"
    shutil.copytree(installer_tools(Arch.X86_64).root, root, symlinks=True)
    (root / "bin/sh").symlink_to("busybox")
    for sub in ("proc", "dev"):
        (root / sub).mkdir()
    unpacked = work / "installer-root"
    unpacked.mkdir()
    with open(iso_initrd_dir / "initrd.img", "rb") as f:
        cpio = run.run(["gzip", "-dc"], input=f.read()).stdout
    run.run(["cpio", "--quiet", "-id", "lib/modules/*"], input=cpio, cwd=unpacked)
    shutil.copytree(unpacked / "lib/modules", root / "lib/modules")
    (root / "init").write_text(COPY_INIT)
    (root / "init").chmod(0o755)
    initrd = work / "copy-initrd.img"
    _cpio(root, initrd)
    return initrd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.parse_args()
    reference = build_example(Arch.X86_64).reference
    with tempfile.TemporaryDirectory(prefix="imgbuild-iso-bench-", dir=ROOT / ".cache") as tmp:
        work = Path(tmp)
        out = work / "out"
        build = ["build", "--type", "iso", "--type", "raw", reference, "--blueprint", str(BLUEPRINT)]
        build += ["--output", str(out), "--progress", "plain"]
        run.run([sys.executable, "-m", "builder", *build], env={"PYTHONPATH": str(ROOT)})
        iso, raw = out / "install.iso", out / "disk.raw"
        payload = run.run(["xorriso", "-indev", iso, "-find", "/imgbuild/disk.zst", "-exec", "lsdl"]).out
        payload_size = int(payload.split()[4]) if payload.strip() else 0
        raw_zst = _zstd_size(raw, work / "disk.raw.zst")

        disk = work / "installer.qcow2"
        run.run(["qemu-img", "create", "-q", "-f", "qcow2", disk, "16G"])
        t0 = time.monotonic()
        vm.boot_installer(
            iso, vm.Medium.CDROM, disk, arch=Arch.X86_64, firmware=vm.Firmware.BIOS, timeout=3000
        )
        installer_s = time.monotonic() - t0

        for name in ("vmlinuz", "initrd.img"):
            run.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", f"/boot/{name}", work / name])
        initrd = _copy_initrd(work, work)
        copy_disk = work / "copy.qcow2"
        run.run(["qemu-img", "create", "-q", "-f", "qcow2", copy_disk, "16G"])
        argv = vm.qemu_argv(Arch.X86_64, vm.Firmware.BIOS, copy_disk, work, memory_mib=1024, smp=2)
        argv += [
            "-drive",
            f"file={raw},format=raw,if=none,id=src,readonly=on",
            "-device",
            "virtio-blk-pci,drive=src",
        ]
        argv += ["-kernel", str(work / "vmlinuz"), "-initrd", str(initrd)]
        argv += ["-append", "console=ttyS0,115200n8 quiet no_timer_check"]
        t0 = time.monotonic()
        copied = run.run(argv, timeout=3000)
        copy_s = time.monotonic() - t0
        if "COPY-DONE" not in copied.out:
            print(copied.out[-2000:])
            return 1
        raw_size, iso_size = raw.stat().st_size, iso.stat().st_size

    mib = 1 << 20
    print(
        f"raw disk: {raw_size / mib:.0f} MiB (sparse), compressed whole with zstd -3: {raw_zst / mib:.1f} MiB"
    )
    print(f"installer ISO: {iso_size / mib:.1f} MiB, its payload {payload_size / mib:.1f} MiB")
    print(f"ISO size / compressed raw: {iso_size / raw_zst:.2f}")
    print(f"install (boot ISO, write, verify, grow, power off): {installer_s:.0f} s")
    print(f"plain copy of the raw disk in the same VM (dd, power off): {copy_s:.0f} s")
    print(f"install time / plain copy: {installer_s / copy_s:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
