"""Secure Boot, enforced: the Secure Boot variants of the example OS (Debian's shim signed by Microsoft's UEFI
CA, GRUB and kernel signed by Debian) boot under OVMF with Microsoft's keys enrolled (the SMM build, q35
smm=on) and under AAVMF's Microsoft-keys variable store, and the guest reports Secure Boot enabled.

- The qcow2 of the bootupd layout and the raw image of the older ostree-boot layout (x86_64), built with
  `--secure-boot require` (each layout and each disk format boots once: a qcow2 is the raw image converted,
  and the bootupd layout's raw image boots below as the unsigned copy's original); qcow2 of the bootupd
  layout on aarch64.
- The same x86_64 image with its GRUB replaced by an unsigned one (the same GRUB, built here with the host's
  grub-mkimage and the same prefix) does not boot under that firmware: shim refuses it. Under plain OVMF
  the unsigned copy's GRUB starts the kernel, so what stops it is the missing signature, nothing else.
- `--secure-boot require` refuses the default example (an unsigned GRUB built here) with one line, exit 2,
  and no output; `imgbuild inspect --json` says which chain each example has.

Five boots (the unsigned copy's two in one job, the plain one only until the kernel starts), two at a
time through tests/bootpool.py; each job builds what it boots, so builds overlap the other slot's boot.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.example import SELFTEST_KARG, SELFTEST_MARKER, ExampleImage
from builder.example_secureboot import Variant, build_variant
from tests.bootpool import Outcomes, boot_all, boot_image
from tests.imagebuilds import Built, ImageBuilds, imgbuild, partitions

SB_LINE = "IMGBUILD-SECUREBOOT"
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
TIMEOUT = {Arch.X86_64: 600, Arch.AARCH64: 900}
# What boots with Secure Boot enforced: each x86_64 layout once, in a different disk format each (the
# slowest boot, aarch64's, first: two run at a time).
BOOTED = (
    ((Variant.SECUREBOOT, Arch.AARCH64), "qcow2"),
    ((Variant.SECUREBOOT, Arch.X86_64), "qcow2"),
    ((Variant.SECUREBOOT_OSTREE_BOOT, Arch.X86_64), "raw"),
)


@pytest.fixture(scope="module")
def variants() -> dict[tuple[Variant, Arch], ExampleImage]:
    return {
        (variant, arch): build_variant(variant, arch)
        for variant, arch in (
            (Variant.SECUREBOOT, Arch.X86_64),
            (Variant.SECUREBOOT_OSTREE_BOOT, Arch.X86_64),
            (Variant.SECUREBOOT, Arch.AARCH64),
        )
    }


def _boot(image: Path, arch: Arch, firmware: str, *, marker: str = SELFTEST_MARKER) -> str:
    """`imgbuild boot` until `marker`; its console output (an AssertionError when the marker never came)."""
    args = ("--arch", arch.value, "--firmware", firmware, "--marker", marker, "--append", SELFTEST_KARG)
    return boot_image(image, *args, timeout=TIMEOUT[arch]).console


def unsigned_grub_copy(raw: Path, dest: Path, work: Path) -> Path:
    """A copy of the raw image whose EFI/debian/grubx64.efi is an unsigned GRUB with the same prefix and
    the modules the stub and grub.cfg need (written into the ESP with mtools)."""
    shutil.copyfile(raw, dest)
    grub = work / "grubx64-unsigned.efi"
    modules = [
        "part_gpt", "fat", "ext2", "search", "search_fs_uuid", "configfile", "normal", "linux", "test",
        "echo", "serial", "terminal", "gzio", "memdisk", "tar",
    ]  # fmt: skip
    run.run(["grub-mkimage", "-O", "x86_64-efi", "-d", "/usr/lib/grub/x86_64-efi", "-p", "/EFI/debian",
             "-o", grub, *modules])  # fmt: skip
    esp = next(p for p in partitions(dest) if p.type_guid == ESP_GUID)
    image = f"{dest}@@{esp.start}"
    run.run(["mcopy", "-o", "-i", image, grub, "::/EFI/debian/grubx64.efi"])
    return dest


def _build(images: ImageBuilds, example: ExampleImage, variant: Variant, arch: Arch) -> Built:
    """The outputs BOOTED needs of one variant (once per session: `images` keeps them)."""
    types = [target for key, target in BOOTED if key == (variant, arch)]
    if (variant, arch) == (Variant.SECUREBOOT, Arch.X86_64):
        types.append("raw")  # the unsigned copy's original
    return images.multi(types, example.reference, "--secure-boot", "require")


@pytest.fixture(scope="module")
def booted(
    variants: dict[tuple[Variant, Arch], ExampleImage],
    images: ImageBuilds,
    tmp_path_factory: pytest.TempPathFactory,
) -> Outcomes[str, object]:
    """Each job builds what it boots (a build runs while the other slot boots), then boots it."""

    def secure(variant: Variant, arch: Arch, target: str) -> str:
        built = _build(images, variants[(variant, arch)], variant, arch)
        return _boot(built.target_file(target), arch, "uefi-secure")

    def unsigned() -> tuple[str, str]:
        sb = (Variant.SECUREBOOT, Arch.X86_64)
        raw = _build(images, variants[sb], *sb).target_file("raw")
        work = tmp_path_factory.mktemp("unsigned")
        copy = unsigned_grub_copy(raw, work / "unsigned.raw", work)
        # Shim refuses the unsigned GRUB ("Verification failed: (0x1A) Security Violation" in its error
        # box, then MokManager waits for a key): the boot stops at that line. Without Secure Boot the very
        # same disk's GRUB starts the kernel: the signature is the only difference.
        refused = _boot(copy, Arch.X86_64, "uefi-secure", marker="Security Violation")
        return refused, _boot(copy, Arch.X86_64, "uefi", marker="Linux version")

    jobs: dict[str, Callable[[], object]] = {}
    for (variant, arch), target in BOOTED:  # the slowest, aarch64's, first
        jobs[f"{variant}-{arch}-{target}"] = functools.partial(secure, variant, arch, target)
    jobs["unsigned"] = unsigned
    return boot_all(jobs)


def _assert_secure_boot(out: str) -> None:
    assert SELFTEST_MARKER in out, out[-3000:]
    line = next(x for x in out.splitlines() if SB_LINE in x)
    # The firmware's SecureBoot variable, as the guest reads it from efivars.
    state = re.search(rf"{SB_LINE} state=(\S+)", line)
    assert state is not None and state.group(1) == "enabled", line
    # The kernel's own word (its EFI stub, or Debian's "secureboot: Secure boot enabled").
    assert "Secure boot enabled" in out or "UEFI Secure Boot is enabled" in out, out[-3000:]


@pytest.mark.parametrize(
    ("variant", "target"), [(variant, target) for (variant, arch), target in BOOTED if arch is Arch.X86_64]
)
def test_x86_64_boots_with_secure_boot_enforced(
    booted: Outcomes[str, object], variant: Variant, target: str
) -> None:
    out = booted.outcome(f"{variant}-{Arch.X86_64}-{target}")
    assert isinstance(out, str)
    _assert_secure_boot(out)


def test_aarch64_boots_under_aavmf_with_microsofts_keys(booted: Outcomes[str, object]) -> None:
    out = booted.outcome(f"{Variant.SECUREBOOT}-{Arch.AARCH64}-qcow2")
    assert isinstance(out, str)
    _assert_secure_boot(out)


def test_unsigned_grub_does_not_boot_with_secure_boot(booted: Outcomes[str, object]) -> None:
    outcome = booted.outcome("unsigned")
    assert isinstance(outcome, tuple)
    refused, plain = outcome
    assert "Verification failed: (0x1A) Security Violation" in refused, refused[-3000:]
    assert "Linux version" not in refused and SB_LINE not in refused  # no kernel ever started
    # Under plain OVMF the same disk's unsigned GRUB loads the kernel, which starts.
    assert "Linux version" in plain, plain[-3000:]


def test_secure_boot_require_refuses_an_unsigned_chain(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = imgbuild(
        ["qcow2", example_x86_64.reference, "--secure-boot", "require", "--output", out], check=False
    )
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "cannot boot with Secure Boot: the image ships no signed shim and GRUB" in err
    assert "Traceback" not in err and not out.exists()


def test_inspect_reports_the_boot_chain(
    variants: dict[tuple[Variant, Arch], ExampleImage],
    example_x86_64: ExampleImage,
    example_aarch64: ExampleImage,
) -> None:
    cases = [(example_x86_64, Arch.X86_64, "unsigned-grub"), (example_aarch64, Arch.AARCH64, "unsigned-grub")]
    cases += [(image, arch, "signed-shim-grub") for (_, arch), image in variants.items()]
    for image, arch, chain in cases:
        doc = json.loads(imgbuild(["inspect", image.reference, "--arch", arch.value, "--json"]).out)
        assert doc["boot"]["chain"] == chain, (image.reference, doc["boot"])
        assert doc["boot"]["secure_boot"] is (chain == "signed-shim-grub"), doc["boot"]
