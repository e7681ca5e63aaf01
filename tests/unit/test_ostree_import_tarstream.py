"""The importer's lean tar reader (builder/ostree/tarstream.py) reads what Python's tarfile writes, in every
header format, and refuses what tarfile would refuse."""

from __future__ import annotations

import io
import tarfile

import pytest

from builder.ostree.tarstream import TarFormatError, TarReader

LONG = "sysroot/ostree/repo/objects/ab/" + "c" * 62 + ".file-xattrs-link/" + "d" * 80


def _tar(fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        d = tarfile.TarInfo("usr")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        data = bytes(range(256)) * 5000  # spans several of the reader's blocks
        f = tarfile.TarInfo(LONG)
        f.size, f.mode, f.uid, f.gid = (
            len(data),
            0o4755,
            1000,
            0o7777777 if fmt != tarfile.USTAR_FORMAT else 7,
        )
        tf.addfile(f, io.BytesIO(data))
        link = tarfile.TarInfo("usr/bin/x")
        link.type, link.linkname = tarfile.LNKTYPE, LONG
        tf.addfile(link)
        sym = tarfile.TarInfo("usr/bin/sh")
        sym.type, sym.linkname = tarfile.SYMTYPE, "bash"
        tf.addfile(sym)
        empty = tarfile.TarInfo("usr/empty")
        tf.addfile(empty, io.BytesIO(b""))
    return out.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_same_members_as_tarfile(fmt: int) -> None:
    data = _tar(fmt)
    reader = TarReader(io.BytesIO(data))
    ours = []
    for member in reader:
        content = reader.read(member.size) if member.isreg() else b""
        ours.append((member.name, member.linkname, member.mode, member.uid, member.gid, member.size, content))
    theirs = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tf:
        for info in tf:
            f = tf.extractfile(info) if info.isreg() else None
            content = f.read() if f is not None else b""
            theirs.append((info.name, info.linkname, info.mode, info.uid, info.gid, info.size, content))
    assert ours == theirs
    assert ours[1][0] == LONG and ours[2][1] == LONG


def test_content_in_pieces_and_skipped() -> None:
    data = _tar(tarfile.PAX_FORMAT)
    reader = TarReader(io.BytesIO(data))
    names = []
    for member in reader:
        names.append(member.name)
        if member.name == LONG:
            pieces = list(reader.chunks(member.size, 4096))
            assert max(len(p) for p in pieces) <= 4096
            assert b"".join(pieces) == bytes(range(256)) * 5000
    assert names == ["usr", LONG, "usr/bin/x", "usr/bin/sh", "usr/empty"]


@pytest.mark.parametrize("where", [0, 148, 300])
def test_damaged_header_refused(where: int) -> None:
    data = bytearray(_tar(tarfile.GNU_FORMAT))
    data[where] ^= 0x20
    with pytest.raises(TarFormatError):
        list(TarReader(io.BytesIO(bytes(data))))


def test_truncated_content_refused() -> None:
    data = _tar(tarfile.GNU_FORMAT)
    reader = TarReader(io.BytesIO(data[:4096]))
    with pytest.raises(TarFormatError, match="unexpected end"):
        for member in reader:
            reader.read(member.size)


def test_malformed_pax_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(tarfile.TarInfo("x" * 120))
    data = bytearray(out.getvalue())
    at = data.index(b" path=")
    data[at - 3 : at] = b"999"  # a record longer than the header
    checksum = 256 + sum(data[:148]) + sum(data[156:512])  # keep the header itself valid
    data[148:156] = b"%06o\0 " % checksum
    with pytest.raises(TarFormatError, match="PAX"):
        list(TarReader(io.BytesIO(bytes(data))))
