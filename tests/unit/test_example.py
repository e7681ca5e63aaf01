"""The example OS recipe and its cache key (builder/example.py): no root, no network, no build."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from builder import run
from builder.arch import Arch
from builder.cli import build_parser
from builder.example import (
    RECIPE_DIR,
    SELFTEST_MARKER,
    archive_name,
    cache_key,
    example_ref,
    mmdebstrap_argv,
    read_packages,
    read_sources,
    recipe_digest,
    recipe_files,
)

ARCHIVE = (("http://deb.invalid/debian/dists/bookworm/InRelease", "0" * 64),)


def test_marker_and_names() -> None:
    assert SELFTEST_MARKER == "IMGBUILD-SELFTEST-OK"
    assert example_ref(Arch.AARCH64) == "debian/12/aarch64/example"
    assert archive_name(Arch.X86_64) == "debian-ostree-x86_64.ociarchive"


def test_packages_per_architecture() -> None:
    amd64, arm64 = read_packages(Arch.X86_64), read_packages(Arch.AARCH64)
    for common in ("systemd-sysv", "ostree", "ostree-boot", "dracut"):
        assert common in amd64 and common in arm64
    assert {"linux-image-amd64", "grub-pc-bin", "grub-efi-amd64-bin"} <= set(amd64)
    assert {"linux-image-arm64", "grub-efi-arm64-bin"} <= set(arm64)
    assert not any("amd64" in p for p in arm64)
    assert not any("arm64" in p for p in amd64)


def test_sources_pin_bookworm() -> None:
    sources = read_sources()
    assert sources
    for line in sources:
        kind, _url, suite, *components = line.split()
        assert kind == "deb" and suite.startswith("bookworm") and components == ["main"]


def test_mmdebstrap_argv(tmp_path: Path) -> None:
    argv = mmdebstrap_argv(Arch.AARCH64, tmp_path / "root")
    assert argv[0] == "mmdebstrap"
    assert "--arch=arm64" in argv and "--variant=minbase" in argv
    assert '--aptopt=APT::Install-Recommends "false"' in argv
    assert any(a.startswith("--customize-hook=") and "customize.sh" in a for a in argv)
    assert "--dpkgopt=path-exclude=/usr/share/man/*" in argv
    suite_at = argv.index("bookworm")
    assert argv[suite_at + 1] == str(tmp_path / "root")
    assert tuple(argv[suite_at + 2 :]) == read_sources()


def test_cache_key_covers_arch_recipe_and_archive() -> None:
    recipe = recipe_digest()
    key = cache_key(Arch.X86_64, recipe, ARCHIVE)
    assert key == cache_key(Arch.X86_64, recipe, ARCHIVE)
    assert key != cache_key(Arch.AARCH64, recipe, ARCHIVE)
    assert key != cache_key(Arch.X86_64, "1" * 64, ARCHIVE)
    moved = ((ARCHIVE[0][0], "f" * 64),)
    assert key != cache_key(Arch.X86_64, recipe, moved)


def test_recipe_files() -> None:
    names = {p.name for p in recipe_files()}
    assert {"packages.txt", "customize.sh", "ostreeify.sh", "imgbuild-selftest", "example.py"} <= names
    assert "README.md" not in names, "documentation does not change the OS"


@pytest.mark.parametrize("script", ["customize.sh", "ostreeify.sh", "imgbuild-selftest"])
def test_scripts_are_valid_sh(script: str) -> None:
    path = RECIPE_DIR / script
    assert run.executable(path)
    run.run([shutil.which("dash") or "sh", "-n", path])


def test_cli_arch_choices() -> None:
    parser = build_parser()
    args = parser.parse_args(["example", "build", "--arch", "all", "--force"])
    assert args.arch == (Arch.X86_64, Arch.AARCH64) and args.force
    args = parser.parse_args(["example", "build", "--arch", "arm64", "--output", "/tmp/x"])
    assert args.arch == (Arch.AARCH64,) and args.output == Path("/tmp/x")
