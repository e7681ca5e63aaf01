"""The derived-layer filter: ostree-ext's path rules, and hostile tar entries refused or neutralised.

These run the filter on in-memory tars and read back what it would hand to `ostree commit`.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from builder.errors import ImportFailure
from builder.ostree.derived import FilterConfig, FilterResult, filter_layer
from tests.helpers_oci import TarWriter

LAYER = "sha256:" + "ab" * 32


def run_filter(
    tw: TarWriter, tmp_path: Path, config: FilterConfig | None = None
) -> tuple[dict[str, tarfile.TarInfo], dict[str, bytes], FilterResult]:
    out = io.BytesIO()
    result = filter_layer(
        io.BytesIO(tw.bytes()), out, layer=LAYER, config=config or FilterConfig(), tmpdir=tmp_path
    )
    members: dict[str, tarfile.TarInfo] = {}
    data: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tf:
        for m in tf:
            members[m.name] = m
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                data[m.name] = f.read()
    return members, data, result


def test_paths_are_mapped(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.dir("./")
    tw.dir("./usr/")
    tw.file("./usr/bin/tool", b"x", 0o755)
    tw.file("/etc/motd", b"hello")
    tw.file("etc//./issue", b"issue")
    tw.file("var/lib/app/state", b"s")
    tw.link("usr/bin/motd-link", "etc/motd", symlink=False)
    members, data, result = run_filter(tw, tmp_path)
    assert set(members) == {
        "usr",
        "usr/bin/tool",
        "usr/etc/motd",
        "usr/etc/issue",
        "usr/share/factory/var/lib/app/state",
        "usr/bin/motd-link",
    }
    assert members["usr/bin/motd-link"].linkname == "usr/etc/motd"
    assert members["usr/bin/tool"].mode == 0o755
    assert data["usr/etc/motd"] == b"hello"
    assert not result.filtered


def test_var_kept_when_libostree_seeds_it(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.file("var/lib/x", b"1")
    members, _, _ = run_filter(tw, tmp_path, FilterConfig(remap_factory_var=False))
    assert set(members) == {"var/lib/x"}


def test_api_filesystems_keep_dir_drop_children(tmp_path: Path) -> None:
    tw = TarWriter()
    for top in ("run", "tmp", "proc", "sys", "dev"):
        tw.dir(f"{top}/")
        tw.file(f"{top}/junk", b"j")
    members, _, result = run_filter(tw, tmp_path)
    assert set(members) == {"run", "tmp", "proc", "sys", "dev"}
    assert dict(result.filtered) == {"run": 1, "tmp": 1, "proc": 1, "sys": 1, "dev": 1}


def test_other_toplevels_dropped_and_counted(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.dir("opt/")
    tw.file("opt/app/bin", b"1")
    tw.file("home/user/.bashrc", b"1")
    tw.file("boot/vmlinuz", b"1")
    tw.file("usr/keep", b"1")
    members, _, result = run_filter(tw, tmp_path)
    assert set(members) == {"usr/keep"}
    assert dict(result.filtered) == {"opt": 2, "home": 1, "boot": 1}


def test_no_ostree_base_keeps_toplevels(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.file("opt/app/bin", b"1")
    members, _, result = run_filter(tw, tmp_path, FilterConfig(allow_nonusr=True))
    assert set(members) == {"opt/app/bin"}
    assert not result.filtered


def test_whiteouts_pass_through(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.file("usr/share/.wh.gone", b"")
    tw.file("etc/foo/.wh..wh..opq", b"")
    members, _, _ = run_filter(tw, tmp_path)
    assert set(members) == {"usr/share/.wh.gone", "usr/etc/foo/.wh..wh..opq"}


@pytest.mark.parametrize("name", ["../evil", "usr/../../evil", "./usr/bin/../../../etc/passwd", "/../x"])
def test_dotdot_refused(tmp_path: Path, name: str) -> None:
    tw = TarWriter()
    tw.file(name, b"x")
    with pytest.raises(ImportFailure, match=f"layer {LAYER}.*'\\.\\.'"):
        run_filter(tw, tmp_path)


def test_dotdot_in_hardlink_target_refused(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.link("usr/x", "../../etc/shadow", symlink=False)
    with pytest.raises(ImportFailure, match=r"\.\."):
        run_filter(tw, tmp_path)


def test_write_through_symlink_refused(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.link("usr/lib/evil", "/etc", symlink=True)
    tw.file("usr/lib/evil/passwd", b"root::0:0::/:/bin/sh\n")
    with pytest.raises(ImportFailure, match="through the symlink usr/lib/evil"):
        run_filter(tw, tmp_path)


def test_write_through_nested_symlink_refused(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.link("etc/evil", "../../..", symlink=True)
    tw.dir("etc/evil/sub/")
    with pytest.raises(ImportFailure, match="through the symlink usr/etc/evil"):
        run_filter(tw, tmp_path)


def test_symlink_replaced_by_file_is_not_a_symlink_anymore(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.link("usr/lib/thing", "/etc", symlink=True)
    tw.file("usr/lib/thing", b"now a file")
    members, _, _ = run_filter(tw, tmp_path)
    assert members["usr/lib/thing"].isreg()


def test_symlink_targets_are_kept_verbatim(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.link("usr/bin/sh", "/usr/bin/bash", symlink=True)
    members, _, _ = run_filter(tw, tmp_path)
    assert members["usr/bin/sh"].linkname == "/usr/bin/bash"


def test_devices_and_fifos_dropped(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.special("usr/null", tarfile.CHRTYPE)
    tw.special("usr/sda", tarfile.BLKTYPE)
    tw.special("usr/fifo", tarfile.FIFOTYPE)
    tw.file("usr/ok", b"1")
    members, _, result = run_filter(tw, tmp_path)
    assert set(members) == {"usr/ok"}
    assert result.dropped_special == 3


def test_hardlink_outside_layer_refused(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.link("usr/bin/shadow", "/etc/shadow", symlink=False)
    with pytest.raises(ImportFailure, match="not in this layer"):
        run_filter(tw, tmp_path)


def test_hardlink_to_filtered_path_dropped(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.file("opt/data", b"1")
    tw.link("usr/data", "opt/data", symlink=False)
    members, _, result = run_filter(tw, tmp_path)
    assert not members
    assert dict(result.filtered) == {"opt": 1, "usr": 1}


def test_modified_sysroot_object_becomes_first_hardlink(tmp_path: Path) -> None:
    obj = "sysroot/ostree/repo/objects/aa/" + "b" * 62 + ".file"
    tw = TarWriter()
    info = tarfile.TarInfo(obj)
    info.mtime, info.mode = 1700000000, 0o755
    tw.add(info, b"patched binary")
    tw.link("usr/bin/a", obj, symlink=False, mtime=1700000000)
    tw.link("usr/bin/b", obj, symlink=False, mtime=1700000000)
    members, data, _ = run_filter(tw, tmp_path)
    assert data["usr/bin/a"] == b"patched binary"
    assert members["usr/bin/b"].islnk() and members["usr/bin/b"].linkname == "usr/bin/a"
    assert "sysroot" not in {m.split("/")[0] for m in members}
    assert list(tmp_path.iterdir()) == []  # the spooled copy is gone


def test_xattrs_pax_records_survive(tmp_path: Path) -> None:
    tw = TarWriter()
    info = tarfile.TarInfo("usr/bin/ping")
    info.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00 \x00\x00"}
    tw.add(info, b"ping")
    members, _, _ = run_filter(tw, tmp_path)
    assert members["usr/bin/ping"].pax_headers["SCHILY.xattr.security.capability"].startswith("\x01")


def test_not_a_tar_refused(tmp_path: Path) -> None:
    with pytest.raises(ImportFailure, match=f"layer {LAYER}"):
        filter_layer(
            io.BytesIO(b"\x01" * 2048), io.BytesIO(), layer=LAYER, config=FilterConfig(), tmpdir=tmp_path
        )


def test_file_then_entries_below_it_refused(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.file("usr/lib/thing", b"x")
    tw.dir("usr/lib/thing/sub/")
    with pytest.raises(ImportFailure, match="below the file usr/lib/thing"):
        run_filter(tw, tmp_path)


def test_directory_and_file_at_one_path_refused(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.dir("usr/lib/thing/")
    tw.file("usr/lib/thing", b"x")
    with pytest.raises(ImportFailure, match="a directory and a file"):
        run_filter(tw, tmp_path)


def test_directory_repeated_is_fine(tmp_path: Path) -> None:
    tw = TarWriter()
    tw.dir("usr/lib/")
    tw.dir("usr/lib/")
    tw.file("usr/lib/x", b"x")
    members, _, _ = run_filter(tw, tmp_path)
    assert set(members) == {"usr/lib", "usr/lib/x"}


@pytest.mark.parametrize("name", ["usr/share/.wh.", "usr/share/.wh..", "usr/share/.wh..."])
def test_whiteout_of_dot_or_dotdot_refused(tmp_path: Path, name: str) -> None:
    tw = TarWriter()
    tw.file(name, b"")
    with pytest.raises(ImportFailure, match="whiteout of"):
        run_filter(tw, tmp_path)
