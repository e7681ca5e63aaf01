"""`imgbuild boot IMAGE`: boot a disk image in qemu, show its serial console, wait for a marker line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builder.arch import Arch
from builder.commands import options
from builder.errors import ImgbuildError
from builder.vm import Firmware, Medium, boot, image_format

DEFAULT_MARKER = "IMGBUILD-SELFTEST-OK"
SELFTEST_ARG = "imgbuild.selftest=1"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "boot",
        help="boot a disk image in qemu and wait for a line on its serial console",
        description=(
            "Boot IMAGE (raw, qcow2, vmdk, vhd... as qemu-img detects it, or an ISO: as a CD by default) in "
            "qemu with its serial console on stdout, through a throwaway overlay so that the image itself is "
            "never modified. Exits 0 when "
            f"the marker appears (default {DEFAULT_MARKER}, which the example OS prints when its kernel "
            f"command line has {SELFTEST_ARG}: use --selftest), 1 when it does not before the timeout."
        ),
    )
    parser.add_argument("image", metavar="IMAGE", type=Path, help="the disk image to boot (left unchanged)")
    parser.add_argument(
        "--firmware",
        type=options.choice("firmware", [f.value for f in Firmware]),
        metavar=options.metavar(Firmware),
        default=None,
        help="bios (SeaBIOS), uefi (OVMF/AAVMF) or uefi-secure (OVMF/AAVMF with Microsoft's keys enrolled "
        "and Secure Boot enforced); default: bios on x86_64, uefi on aarch64",
    )
    parser.add_argument(
        "--arch", type=Arch.parse, default=None, help="x86_64 or aarch64 (default: the host's)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the marker (600)")
    parser.add_argument(
        "--marker", default=DEFAULT_MARKER, help=f"the console text to wait for ({DEFAULT_MARKER})"
    )
    parser.add_argument(
        "--no-marker",
        action="store_true",
        help="wait for no marker: run until the VM powers off (or the timeout)",
    )
    parser.add_argument(
        "--append",
        default=None,
        metavar="ARGS",
        help="kernel arguments to add for this boot only (edits the overlay with libguestfs)",
    )
    parser.add_argument("--selftest", action="store_true", help=f"add {SELFTEST_ARG} to the kernel arguments")
    parser.add_argument("--memory", type=int, default=1024, metavar="MIB", help="guest memory (1024 MiB)")
    parser.add_argument(
        "--smp", type=_cpus, default=2, metavar="N", help="virtual CPUs (2; under TCG each is a host thread)"
    )
    parser.add_argument(
        "--medium",
        type=options.choice("medium", [m.value for m in Medium]),
        metavar="{" + ",".join(m.value for m in Medium) + "}",
        default=None,
        help="attach IMAGE as a disk (virtio), a cdrom or a usb stick; default: cdrom for an ISO, else disk",
    )
    parser.set_defaults(func=run)


def _cpus(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise ImgbuildError(f"--smp {text!r} is not a number of CPUs from 1 to 64", hint="e.g. --smp 1")
    return int(text)


def run(args: argparse.Namespace) -> int:
    image: Path = args.image
    image_format(image)  # a missing or non-image file fails here, before anything starts
    arch: Arch = args.arch or Arch.host()
    firmware = (
        Firmware(args.firmware)
        if args.firmware
        else (Firmware.BIOS if arch is Arch.X86_64 else Firmware.UEFI)
    )
    append = " ".join(a for a in (args.append, SELFTEST_ARG if args.selftest else None) if a) or None
    marker = None if args.no_marker else args.marker
    result = boot(
        image,
        arch=arch,
        firmware=firmware,
        timeout=args.timeout,
        marker=marker,
        append=append,
        console=sys.stdout,
        memory_mib=args.memory,
        smp=args.smp,
        medium=Medium(args.medium) if args.medium else None,
    )
    if marker is None:
        print(f"\nimgbuild: the VM stopped after {result.seconds:.0f} s", file=sys.stderr)
    else:
        print(f"\nimgbuild: {marker!r} seen after {result.seconds:.0f} s", file=sys.stderr)
    return 0
