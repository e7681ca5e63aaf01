"""The installer ISO installs and the installed disks boot (issue 13).

One unattended x86_64 ISO boots from a CD under SeaBIOS and under OVMF and as a USB stick under OVMF, an
unattended aarch64 ISO from a CD under AAVMF, each with an empty 16 GiB virtio disk: each writes the disk,
checks what it wrote against the payload's sha256 and powers off. Every installed disk has its backup GPT at
its end and its root filesystem across the larger disk; the partitions before the root are byte for byte the
`raw` output's. The disk installed under SeaBIOS then boots on its own to the self-test marker (in the same
job as its install); the disk installed under OVMF boots under Secure Boot in
tests/vm/test_secureboot_iso.py, and the raw outputs boot on both arches in the boot tests. An attended ISO
waits at its prompt and leaves the disk untouched. The installer's own errors (disk too small, no disk, an
unattended device that does not exist) are booted from the ISO's kernel and initramfs directly (no GRUB):
one line, then power off, nothing written.

Boots: 5 installs (one followed by its disk's boot) + 3 error boots, two at a time (tests/bootpool.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder import run, vm
from builder.arch import Arch
from builder.example import SELFTEST_KARG, ExampleImage
from builder.iso.medium import read_pvd
from tests.bootpool import GUEST_SMP, Outcomes, boot_all, boot_image
from tests.imagebuilds import Built, ImageBuilds
from tests.installed import Installed, allocated_bytes, partition_hashes, read_installed

UNATTENDED = Path(__file__).resolve().parents[1] / "data" / "installer" / "unattended.toml"
DISK_SIZE = "16G"
INSTALL_TIMEOUT = 1500.0
PROMPT = "install to which disk"
MiB = 1 << 20


@dataclass(frozen=True)
class Install:
    disk: Path
    result: vm.BootResult
    selftest: str = ""  # the installed disk's self-test line, when it was booted after the install


@dataclass(frozen=True)
class Isos:
    x86_64: Built  # unattended; also writes the raw disk (one pipeline: the ISO's payload is this raw)
    aarch64: Built  # unattended
    attended: Built  # x86_64, no installer customization


@pytest.fixture(scope="module")
def isos(example_x86_64: ExampleImage, example_aarch64: ExampleImage, images: ImageBuilds) -> Isos:
    bp = ("--blueprint", str(UNATTENDED))
    return Isos(
        x86_64=images.multi(("iso", "raw"), example_x86_64.reference, *bp),
        aarch64=images.get("iso", example_aarch64.reference, *bp),
        attended=images.get("iso", example_x86_64.reference),
    )


def _empty_disk(path: Path, size: str = DISK_SIZE) -> Path:
    run.run(["qemu-img", "create", "-q", "-f", "qcow2", path, size])
    return path


def _install(
    iso: Path,
    kind: vm.Medium,
    disk: Path,
    arch: Arch,
    firmware: vm.Firmware,
    marker: str | None = None,
    *,
    then_boot: bool = False,
) -> Callable[[], Install]:
    """Install from `iso` onto `disk`; with `then_boot`, boot the installed disk to the self-test too."""

    def job() -> Install:
        result = vm.boot_installer(
            iso,
            kind,
            disk,
            arch=arch,
            firmware=firmware,
            timeout=INSTALL_TIMEOUT,
            marker=marker,
            smp=GUEST_SMP,
        )
        installed = "INSTALL-DONE" in result.console_tail  # else no boot: test_install_* says what happened
        selftest = _disk_boot(disk, arch, firmware.value) if then_boot and installed else ""
        return Install(disk, result, selftest)

    return job


def _direct(iso: Path, disk: Path | None, args: str, workdir: Path) -> Callable[[], tuple[str, Path | None]]:
    """The ISO's installer kernel and initramfs booted directly (no GRUB) with `args`: its console."""

    def job() -> tuple[str, Path | None]:
        for name in ("vmlinuz", "initrd.img"):
            run.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", f"/boot/{name}", workdir / name])
        argv = vm.installer_argv(
            Arch.X86_64,
            vm.Firmware.BIOS,
            iso,
            vm.Medium.CDROM,
            disk or _empty_disk(workdir / "unused.qcow2"),
            workdir,
            memory_mib=1024,
            smp=1,
        )
        if disk is None:  # drop the target disk: its -drive and -device
            at = argv.index("virtio-blk-pci,drive=disk0,bootindex=2")
            del argv[at - 3 : at + 1]
        volid = iso_volume_id(iso)
        cmdline = f"console=ttyS0,115200n8 quiet no_timer_check imgbuild.install.volid={volid} {args}"
        argv += ["-kernel", str(workdir / "vmlinuz"), "-initrd", str(workdir / "initrd.img")]
        argv += ["-append", cmdline]
        result = run.run(argv, timeout=INSTALL_TIMEOUT, check=False)
        return result.out, disk

    return job


def iso_volume_id(iso: Path) -> str:
    return read_pvd(iso)["volume_id"]


@pytest.fixture(scope="module")
def installs(isos: Isos, tmp_path_factory: pytest.TempPathFactory) -> Outcomes[str, object]:
    tmp = tmp_path_factory.mktemp("installs")
    x86 = isos.x86_64.target_file("iso")
    arm = isos.aarch64.target_file("iso")
    cd, usb = vm.Medium.CDROM, vm.Medium.USB
    bios, uefi = vm.Firmware.BIOS, vm.Firmware.UEFI
    small = tmp / "small"
    nodisk = tmp / "nodisk"
    nodev = tmp / "nodev"
    for d in (small, nodisk, nodev):
        d.mkdir()
    jobs: dict[str, Callable[[], object]] = {
        "aarch64": _install(arm, cd, _empty_disk(tmp / "aarch64.qcow2"), Arch.AARCH64, uefi),
        "bios-cd": _install(x86, cd, _empty_disk(tmp / "bios-cd.qcow2"), Arch.X86_64, bios, then_boot=True),
        "uefi-cd": _install(x86, cd, _empty_disk(tmp / "uefi-cd.qcow2"), Arch.X86_64, uefi),
        "uefi-usb": _install(x86, usb, _empty_disk(tmp / "uefi-usb.qcow2"), Arch.X86_64, uefi),
        "attended": _install(
            isos.attended.target_file("iso"),
            cd,
            _empty_disk(tmp / "attended.qcow2"),
            Arch.X86_64,
            bios,
            marker=PROMPT,
        ),
        "small": _direct(
            x86, _empty_disk(small / "small.qcow2", "1G"), "imgbuild.install.unattended=1", small
        ),
        "nodisk": _direct(x86, None, "imgbuild.install.unattended=1", nodisk),
        "nodev": _direct(
            x86,
            _empty_disk(nodev / "target.qcow2"),
            "imgbuild.install.unattended=1 imgbuild.install.device=/dev/nosuch",
            nodev,
        ),
    }
    return boot_all(jobs)


def _disk_boot(disk: Path, arch: Arch, firmware: str) -> str:
    """Boot the installed `disk` to the self-test marker: that console line."""
    args = ("--arch", arch.value, "--firmware", firmware, "--append", SELFTEST_KARG)
    return boot_image(disk, *args, timeout=900).line()


def _installed(installs: Outcomes[str, object], key: str, tmp: Path) -> tuple[Install, Installed]:
    install = installs.outcome(key)
    assert isinstance(install, Install)
    assert "imgbuild-installer: INSTALL-DONE /dev/vda" in install.result.console_tail, (
        install.result.console_tail
    )
    assert "imgbuild-installer: verified sha256" in install.result.console_tail
    return install, read_installed(install.disk, tmp)


@pytest.mark.parametrize("key", ["bios-cd", "uefi-cd", "uefi-usb", "aarch64"])
def test_install_writes_the_disk_and_grows_root(
    key: str, installs: Outcomes[str, object], isos: Isos, tmp_path: Path
) -> None:
    install, found = _installed(installs, key, tmp_path)
    built = isos.aarch64 if key == "aarch64" else isos.x86_64
    entry = next(o for o in built.result["outputs"] if o["target"] == "iso")
    assert f"verified sha256 {entry['payload_sha256']}" in install.result.console_tail
    assert found.disk_size == 16 << 30
    assert found.backup_gpt_at_end, found.verify
    assert "No errors detected" in found.verify, found.verify
    # Root partition and filesystem run to the disk's end (the GPT's last usable sector).
    assert found.root_start + found.root_size >= found.disk_size - MiB
    assert found.root_fs_size >= found.root_size - MiB
    assert found.root_fs_size > 3 * entry["disk_size"]


def test_installed_system_is_the_raw_target(
    installs: Outcomes[str, object], isos: Isos, tmp_path: Path
) -> None:
    """The partitions before the root (BIOS boot, ESP, /boot) are byte for byte the raw output's."""
    _, found = _installed(installs, "bios-cd", tmp_path)
    raw = isos.x86_64.target_file("raw")
    entry = next(o for o in isos.x86_64.result["outputs"] if o["target"] == "iso")
    assert entry["root_partition"] == 4 and entry["root_fstype"] == "ext4"
    expected = partition_hashes(raw)
    assert len(expected) == 3 and found.partitions == expected


def test_installed_disk_boots(installs: Outcomes[str, object], isos: Isos) -> None:
    install = installs.outcome("bios-cd")
    assert isinstance(install, Install)
    assert f"commit={isos.x86_64.result['commit']}" in install.selftest, install.selftest


def test_attended_install_waits_and_writes_nothing(installs: Outcomes[str, object]) -> None:
    install = installs.outcome("attended")
    assert isinstance(install, Install)
    assert install.result.marker_line is not None and PROMPT in install.result.marker_line
    assert "/dev/vda  16384 MiB" in install.result.console_tail
    assert allocated_bytes(install.disk) == 0


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("small", "is smaller than the image"),
        ("nodisk", "no disk to install to"),
        ("nodev", "the install device /dev/nosuch does not exist"),
    ],
)
def test_install_errors_are_one_line_and_write_nothing(
    key: str, message: str, installs: Outcomes[str, object]
) -> None:
    outcome = installs.outcome(key)
    assert isinstance(outcome, tuple)
    console, disk = outcome
    errors = [line for line in console.splitlines() if line.startswith("imgbuild-installer: ERROR:")]
    assert len(errors) == 1 and message in errors[0], console[-3000:]
    assert "reboot: Power down" in console
    assert "writing the image" not in console
    if disk is not None:
        assert allocated_bytes(disk) == 0
