"""The installer environment and the iso target's build-time refusals, without booting.

The environment of each architecture comes from the example image's commit and the Debian archive: its
programs are the arch's (ELF machine), its drivers the image's own kernel's, and it is cached by its inputs.
A blueprint's installer settings without the iso output, and a device that is no path, are one line, exit 2,
nothing written.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.example import ExampleImage
from builder.installer.initramfs import installer_env
from tests.imagebuilds import imgbuild, leaked_resources

ELF_MACHINE = {Arch.X86_64: 62, Arch.AARCH64: 183}
PROGRAMS = ("init", "bin/busybox", "sbin/sfdisk", "sbin/blkdiscard", "sbin/resize2fs", "usr/bin/zstd")


def _unpack(initrd: Path, dest: Path) -> None:
    dest.mkdir()
    run.run(["cpio", "--quiet", "-idm"], input=gzip.decompress(initrd.read_bytes()), cwd=dest)


@pytest.mark.parametrize("arch", [Arch.X86_64, Arch.AARCH64])
def test_environment_is_the_images_kernel_and_the_arch_programs(
    arch: Arch, example_x86_64: ExampleImage, example_aarch64: ExampleImage, tmp_path: Path
) -> None:
    example = example_x86_64 if arch is Arch.X86_64 else example_aarch64
    env = installer_env(example.repo, example.commit, arch)
    assert env.kernel_version == example.kernel
    kernel = run.run(
        [
            "ostree",
            f"--repo={example.repo}",
            "cat",
            example.commit,
            f"/usr/lib/modules/{example.kernel}/vmlinuz",
        ]
    )
    assert env.kernel.read_bytes() == kernel.stdout
    root = tmp_path / "root"
    _unpack(env.initrd, root)
    for program in PROGRAMS:
        assert (root / program).is_file(), program
    for program in PROGRAMS[1:]:
        header = (root / program).read_bytes()[:20]
        assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == ELF_MACHINE[arch]
    loaded = (root / "lib/modules/load-order").read_text().split()
    assert loaded == list(env.modules)
    names = {Path(m).name for m in loaded}
    assert {"isofs.ko", "sr_mod.ko", "virtio_blk.ko", "usb-storage.ko"} <= names
    assert all((root / "lib/modules" / m).is_file() for m in loaded)
    again = installer_env(example.repo, example.commit, arch)
    assert again.initrd == env.initrd and again.initrd.stat().st_mtime == env.initrd.stat().st_mtime


def _error(stderr: bytes) -> str:
    text = stderr.decode()
    lines = [line for line in text.splitlines() if line.startswith("imgbuild: error:")]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize(
    ("document", "argv", "refusal"),
    [
        (
            "[customizations.installer]\nunattended = true\n",
            ["raw"],
            "customizations.installer and installation_device apply only to the installer ISO (iso)",
        ),
        (
            '[customizations]\ninstallation_device = "sda"\n',
            ["iso"],
            "customizations.installation_device: 'sda' must be a device path",
        ),
    ],
)
def test_installer_settings_refused_before_anything_is_written(
    document: str, argv: list[str], refusal: str, example_x86_64: ExampleImage, tmp_path: Path
) -> None:
    blueprint = tmp_path / "bp.toml"
    blueprint.write_text(document)
    out = tmp_path / "out"
    result = imgbuild(
        [*argv, example_x86_64.reference, "--blueprint", blueprint, "--output", out], check=False
    )
    assert result.returncode == 2
    assert refusal in _error(result.stderr)
    assert not out.exists() or not any(out.iterdir())
    assert leaked_resources(tmp_path) == []
