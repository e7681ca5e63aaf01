"""The Secure Boot variants' derivation from the default example: the packages they unpack, the cache key,
and unpacking without maintainer scripts (a real .deb made here with dpkg-deb). Booting them:
tests/vm/test_secureboot.py."""

from __future__ import annotations

from pathlib import Path

from builder import debfetch, run
from builder.arch import Arch
from builder.example_secureboot import Variant, cache_key, read_packages

ARCHIVE = (("http://archive.invalid/debian/dists/bookworm/InRelease", "0" * 64),)


def test_packages_per_architecture() -> None:
    for arch in Arch:
        d = arch.debian
        assert read_packages(arch) == ("shim-signed", f"shim-helpers-{d}-signed", f"grub-efi-{d}-signed")


def test_cache_key_follows_the_default_example() -> None:
    key = cache_key(Variant.SECUREBOOT, Arch.X86_64, "recipe", ARCHIVE, "basekey", "c1")
    assert key == cache_key(Variant.SECUREBOOT, Arch.X86_64, "recipe", ARCHIVE, "basekey", "c1")
    others = {
        cache_key(Variant.SECUREBOOT, Arch.X86_64, "recipe", ARCHIVE, "basekey", "c2"),  # rebuilt default
        cache_key(Variant.SECUREBOOT, Arch.X86_64, "recipe", ARCHIVE, "otherkey", "c1"),
        cache_key(Variant.SECUREBOOT, Arch.X86_64, "recipe2", ARCHIVE, "basekey", "c1"),
        cache_key(Variant.SECUREBOOT, Arch.X86_64, "recipe", (), "basekey", "c1"),
        cache_key(Variant.SECUREBOOT_OSTREE_BOOT, Arch.X86_64, "recipe", ARCHIVE, "basekey", "c1"),
        cache_key(Variant.SECUREBOOT, Arch.AARCH64, "recipe", ARCHIVE, "basekey", "c1"),
    }
    assert key not in others and len(others) == 6


def _deb(tmp_path: Path) -> Path:
    """A package with a signed-looking file and a postinst that would leave a trace if it ran."""
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "usr/lib/shim").mkdir(parents=True)
    (root / "usr/lib/shim/shimx64.efi.signed").write_bytes(b"MZ shim")
    trace = tmp_path / "postinst-ran"
    (root / "DEBIAN/control").write_text(
        "Package: fake-shim\nVersion: 1.2-3\nArchitecture: arm64\nMaintainer: t <t@example.invalid>\n"
        "Description: test package\n"
    )
    postinst = root / "DEBIAN/postinst"
    postinst.write_text(f"#!/bin/sh\ntouch {trace}\n")
    postinst.chmod(0o755)
    deb = tmp_path / "fake-shim_1.2-3_arm64.deb"
    run.run(["dpkg-deb", "--root-owner-group", "--build", root, deb])
    return deb


def test_unpack_runs_no_maintainer_script(tmp_path: Path) -> None:
    path = _deb(tmp_path)
    deb = debfetch.Deb("fake-shim", "arm64", "1.2-3", path)
    assert deb.key == "fake-shim:arm64"
    dest = tmp_path / "tree"
    debfetch.unpack(deb, dest)
    assert (dest / "usr/lib/shim/shimx64.efi.signed").read_bytes() == b"MZ shim"
    assert not (tmp_path / "postinst-ran").exists()
    assert not (dest / "DEBIAN").exists()
