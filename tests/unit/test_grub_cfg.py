"""BLS entries in, grub.cfg out; kernel arguments appended for one boot."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.bootloader import BootloaderError
from builder.bootloader.grub_cfg import (
    BlsEntry,
    grub_has_blscfg,
    grub_quote,
    parse_bls_entries,
    render_grub_cfg,
    split_kernel_args,
    write_grub_cfg,
)
from builder.bootloader.kargs import LocalFiles, append_to_bls, append_to_grub_cfg, edit_boot_files

ENTRY = """title Debian GNU/Linux 12 (bookworm) (ostree:{index})
version {version}
options root=UUID=2007 rw console=ttyS0 ostree=/ostree/boot.1/debian/{csum}/0
linux /ostree/debian-{csum}/vmlinuz-6.1.0-56-amd64
initrd /ostree/debian-{csum}/initramfs-6.1.0-56-amd64.img
"""


def ostree_boot(tmp_path: Path, versions: dict[str, int]) -> Path:
    """/boot as ostree 2022.7 writes it: loader -> loader.1, one entry per deployment."""
    boot = tmp_path / "boot"
    entries = boot / "loader.1" / "entries"
    entries.mkdir(parents=True)
    for index, (csum, version) in enumerate(versions.items()):
        (entries / f"ostree-{version}-debian.conf").write_text(
            ENTRY.format(index=index, version=version, csum=csum)
        )
    (boot / "loader").symlink_to("loader.1")
    return boot


def test_parse_follows_the_loader_link_and_sorts_newest_first(tmp_path: Path) -> None:
    boot = ostree_boot(tmp_path, {"aaaa": 2, "bbbb": 10, "cccc": 1})
    entries = parse_bls_entries(boot)
    assert [e.version for e in entries] == ["10", "2", "1"]
    newest = entries[0]
    assert newest.filename == "ostree-10-debian.conf"
    assert newest.linux == "/ostree/debian-bbbb/vmlinuz-6.1.0-56-amd64"
    assert newest.initrd == ("/ostree/debian-bbbb/initramfs-6.1.0-56-amd64.img",)
    assert newest.options.endswith("ostree=/ostree/boot.1/debian/bbbb/0")


def test_parse_without_entries_is_empty(tmp_path: Path) -> None:
    assert parse_bls_entries(tmp_path) == []


def test_a_loader_link_leaving_boot_is_refused(tmp_path: Path) -> None:
    (tmp_path / "loader").symlink_to("/etc")
    with pytest.raises(BootloaderError, match=r"loader\.N"):
        parse_bls_entries(tmp_path)


def test_menuentries_for_a_grub_without_blscfg(tmp_path: Path) -> None:
    boot = ostree_boot(tmp_path, {"aaaa": 1, "bbbb": 2})
    path = write_grub_cfg(boot, entries=parse_bls_entries(boot), use_blscfg=False, boot_fs_uuid="0b0e")
    assert path == boot / "grub2" / "grub.cfg"
    text = path.read_text()
    assert "blscfg" not in text
    assert "search --no-floppy --fs-uuid --set=root 0b0e" in text
    assert "terminal_output serial console" in text
    first = text.index("menuentry 'Debian GNU/Linux 12 (bookworm) (ostree:1)'")
    second = text.index("menuentry 'Debian GNU/Linux 12 (bookworm) (ostree:0)'")
    assert first < second  # newest (version 2) first: it is the default
    assert (
        "    linux /ostree/debian-bbbb/vmlinuz-6.1.0-56-amd64 root=UUID=2007 rw console=ttyS0 "
        "ostree=/ostree/boot.1/debian/bbbb/0\n    initrd /ostree/debian-bbbb/initramfs-6.1.0-56-amd64.img\n"
    ) in text
    assert not list(path.parent.glob(".*partial"))


def test_blscfg_for_fedoras_grub(tmp_path: Path) -> None:
    text = render_grub_cfg([], use_blscfg=True, timeout=5, serial=False)
    assert text.splitlines()[-2:] == ["insmod blscfg", "blscfg"]
    assert "set timeout=5" in text and "serial" not in text
    with pytest.raises(BootloaderError, match="no BLS entries"):
        render_grub_cfg([], use_blscfg=False)
    (tmp_path / "blscfg.mod").write_bytes(b"")
    assert grub_has_blscfg(tmp_path)
    assert not grub_has_blscfg(Path("/usr/lib/grub/i386-pc"))  # Debian's GRUB has none


def test_kernel_args_are_split_and_quoted_for_grub() -> None:
    assert split_kernel_args('a=1  b="x y" c') == ["a=1", 'b="x y"', "c"]
    assert grub_quote("root=UUID=ab-cd") == "root=UUID=ab-cd"
    assert grub_quote('b="x y"') == "'b=\"x y\"'"
    assert grub_quote("it's$x") == "'it'\\''s$x'"
    entry = BlsEntry("e.conf", "T's", "1", 'quiet init="/bin/sh -x"', "/vmlinuz")
    text = render_grub_cfg([entry], use_blscfg=False, serial=False)
    assert "menuentry 'T'\\''s' --id e {" in text
    assert "    linux /vmlinuz quiet 'init=\"/bin/sh -x\"'\n" in text


def test_append_to_bls_and_grub_cfg() -> None:
    bls = ENTRY.format(index=0, version=1, csum="aaaa")
    out = append_to_bls(bls, "imgbuild.selftest=1")
    assert "ostree=/ostree/boot.1/debian/aaaa/0 imgbuild.selftest=1\n" in out
    assert append_to_bls("title x\nlinux /k\n", "a=1").endswith("options a=1\n")
    cfg = "menuentry x {\n    linux /k root=x\n    initrd /i\n}\n  linuxefi /k2\n"
    out = append_to_grub_cfg(cfg, "a=1")
    assert "    linux /k root=x a=1\n" in out and "  linuxefi /k2 a=1\n" in out and "initrd /i\n" in out
    assert append_to_grub_cfg("blscfg\n", "a=1") == "blscfg\n"


def test_edit_boot_files_once_each_and_never_outside(tmp_path: Path) -> None:
    boot = ostree_boot(tmp_path, {"aaaa": 1})
    (boot / "boot").symlink_to(".")  # as ostree makes it: /boot/boot/... is /boot/...
    write_grub_cfg(boot, entries=parse_bls_entries(boot), use_blscfg=False)
    outside = tmp_path / "host-file"
    outside.write_text("linux /etc/secret\n")
    (boot / "grub").mkdir()
    (boot / "grub" / "grub.cfg").symlink_to(outside)  # hostile: points out of the filesystem
    assert edit_boot_files(LocalFiles(boot), "a=1") == 2
    assert outside.read_text() == "linux /etc/secret\n"
    cfg = (boot / "grub2" / "grub.cfg").read_text()
    assert cfg.count(" a=1") == 1 and "ostree=/ostree/boot.1/debian/aaaa/0 a=1\n" in cfg
    entry = (boot / "loader.1" / "entries" / "ostree-1-debian.conf").read_text()
    assert entry.count(" a=1") == 1
