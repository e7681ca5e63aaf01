"""`imgbuild upload aws` input checks and the disk inspection, without a server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from builder.arch import Arch
from builder.cli import main
from builder.errors import UploadError
from builder.upload.diskinfo import BootMode, inspect
from tests.aws_helpers import make_disk


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    code = main(list(args))
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--aws-region", "Europe", "--aws-ami-name", "ok-name"], "'Europe' is not an AWS region name"),
        (["--aws-region", "eu-west-1", "--aws-ami-name", "x"], "'x' is not a valid AMI name"),
        (
            ["--aws-region", "eu-west-1", "--aws-ami-name", "ok-name", "--aws-share", "12"],
            "--aws-share '12' is not an AWS account id",
        ),
    ],
)
def test_bad_flags_are_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], message: str
) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"")
    code, lines = _run(capsys, "upload", "aws", str(disk), *flags)
    assert code == 2
    assert lines[0] == f"imgbuild: error: {message}"
    assert len(lines) == 2 and lines[1].startswith("hint: ")


def test_bad_tag_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "upload",
                "aws",
                "d",
                "--aws-region",
                "eu-west-1",
                "--aws-ami-name",
                "abc",
                "--aws-tag",
                "novalue",
            ]
        )
    assert exit_.value.code == 2
    assert "is not a tag: give KEY=VALUE" in capsys.readouterr().err


def test_no_credentials(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached
    disk = make_disk(tmp_path / "disk.raw").path
    code, lines = _run(
        capsys, "upload", "aws", str(disk), "--aws-region", "eu-west-1", "--aws-ami-name", "abc"
    )
    assert code == 2 and lines[0] == "imgbuild: error: no AWS credentials found"
    code, lines = _run(
        capsys,
        "upload",
        "aws",
        str(disk),
        "--aws-region",
        "eu-west-1",
        "--aws-ami-name",
        "abc",
        "--aws-profile",
        "p",
    )
    assert code == 2 and lines[0] == "imgbuild: error: AWS profile 'p' not found"


@pytest.mark.parametrize(
    ("arch", "bios", "uefi", "mode"),
    [
        ("x86_64", True, True, BootMode.UEFI_PREFERRED),
        ("x86_64", True, False, BootMode.LEGACY_BIOS),
        ("x86_64", False, True, BootMode.UEFI),
        ("aarch64", False, True, BootMode.UEFI),
    ],
)
def test_boot_modes_from_the_disk(tmp_path: Path, arch: str, bios: bool, uefi: bool, mode: BootMode) -> None:
    disk = make_disk(tmp_path / "disk.raw", arch=arch, bios=bios, uefi=uefi).path
    info = inspect(disk)
    assert (info.arch, info.bios, info.uefi, info.boot_mode) == (Arch(arch), bios, uefi, mode)


def test_no_loader_is_refused(tmp_path: Path) -> None:
    disk = make_disk(tmp_path / "disk.raw", arch="aarch64", bios=False, uefi=False).path
    with pytest.raises(UploadError, match=r"has no boot loader for aarch64: .*EFI/BOOT/BOOTAA64.EFI"):
        inspect(disk)


def test_result_json_beside_the_disk_names_the_arch(tmp_path: Path) -> None:
    """The arch the build recorded wins over the disk's hints (here, on purpose, a wrong one)."""
    disk = make_disk(tmp_path / "disk.raw", bios=True, uefi=True).path
    assert inspect(disk).arch is Arch.X86_64
    record = {"source": {"arch": "aarch64"}, "outputs": [{"path": "disk.raw", "format": "raw"}]}
    (tmp_path / "result.json").write_text(json.dumps(record))
    with pytest.raises(UploadError, match="has no boot loader for aarch64"):
        inspect(disk)
    record["outputs"] = [{"path": "other.raw", "format": "raw"}]  # a result of another disk is ignored
    (tmp_path / "result.json").write_text(json.dumps(record))
    assert inspect(disk).arch is Arch.X86_64


def test_not_a_disk(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 1000)
    with pytest.raises(UploadError, match="has no partition table"):
        inspect(text)
