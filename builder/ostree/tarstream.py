"""A lean reader of tar streams, for the ostree layers of an image (tens of thousands of small entries).

Python's `tarfile` costs about 60 µs of interpreter work per entry in stream mode (10 KiB reads through
several layers, every header field parsed); for the object stream of an ostree layer (three or four entries
per file: xattrs, xattrs link, object, hardlinks) that was as much time as decompressing the layer. This
reader parses only what the importer uses (name, link name, type, mode, uid, gid, size) from ustar, GNU
(long names `L`/`K`) and PAX (`path`, `linkpath`, `size`, `uid`, `gid`) headers, checks every header's
checksum as tarfile does, and reads the stream in large blocks. Anything it cannot read is a TarFormatError;
callers treat the layer as invalid.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

BLOCK = 512
READ_SIZE = 1024 * 1024
MAX_EXTENDED_HEADER = 1024 * 1024  # PAX records and GNU long names are a few hundred bytes in practice

REGTYPES = frozenset({b"0", b"\0", b"7"})
LNKTYPE, SYMTYPE, DIRTYPE = b"1", b"2", b"5"
NO_CONTENT = frozenset({LNKTYPE, SYMTYPE, b"3", b"4", DIRTYPE, b"6"})  # as tarfile: the rest carry data


class TarFormatError(Exception):
    pass


@dataclass(frozen=True)
class Member:
    name: str
    linkname: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int  # bytes of content that follow the header (0 for links and directories)

    def isreg(self) -> bool:
        return self.type in REGTYPES

    def issym(self) -> bool:
        return self.type == SYMTYPE

    def islnk(self) -> bool:
        return self.type == LNKTYPE

    def isdir(self) -> bool:
        return self.type == DIRTYPE


def _string(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    if field[:1] in (b"\x80", b"\xff"):  # GNU base-256
        value = int.from_bytes(field[1:], "big")
        if field[0] == 0xFF:
            value -= 1 << (8 * (len(field) - 1))
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise TarFormatError(f"invalid number field {field!r}") from None


def _checksum_ok(header: bytes) -> bool:
    """The header checksum, as tarfile checks it: the sum of the bytes with the field itself as spaces,
    as unsigned chars (POSIX) or signed ones (some old tars)."""
    stored = _number(header[148:156])
    if stored == 256 + sum(header[:148]) + sum(header[156:]):
        return True
    rest = header[:148] + header[156:]
    return stored == 256 + sum(rest) - 256 * sum(1 for b in rest if b > 127)


def _pax_records(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            raise TarFormatError("malformed PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise TarFormatError("malformed PAX header") from None
        record = data[space + 1 : pos + length]
        if length <= 0 or pos + length > len(data) or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("malformed PAX header")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class TarReader:
    """Iterate over the members of an uncompressed tar stream; read each member's content before the next."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buf = b""
        self.pos = 0
        self.remaining = 0  # content bytes of the current member not read yet
        self.padding = 0

    def _fill(self, n: int) -> bool:
        """At least n bytes buffered from `pos`; False at the end of the stream."""
        while len(self.buf) - self.pos < n:
            chunk = self.stream.read(max(READ_SIZE, n))
            if not chunk:
                return False
            self.buf = self.buf[self.pos :] + chunk
            self.pos = 0
        return True

    def _take(self, n: int) -> bytes:
        if not self._fill(n):
            raise TarFormatError("unexpected end of the tar stream")
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def _skip_content(self) -> None:
        for _ in self.chunks(self.remaining):
            pass
        self._take(self.padding)
        self.padding = 0

    def chunks(self, n: int, size: int = READ_SIZE) -> Iterator[bytes]:
        """The next n content bytes of the current member, in pieces of at most `size`."""
        if n > self.remaining:
            raise TarFormatError("read past the end of a member")
        while n > 0:
            available = len(self.buf) - self.pos
            if available == 0:
                chunk = self.stream.read(READ_SIZE)
                if not chunk:
                    raise TarFormatError("unexpected end of the tar stream")
                self.buf, self.pos, available = chunk, 0, len(chunk)
            take = min(n, available, size)
            data = self.buf[self.pos : self.pos + take]
            self.pos += take
            self.remaining -= take
            n -= take
            yield data

    def read(self, n: int) -> bytes:
        """The next n content bytes of the current member (n at most what is left of it)."""
        if self.pos + n <= len(self.buf) and n <= self.remaining:  # the common case: one slice
            data = self.buf[self.pos : self.pos + n]
            self.pos += n
            self.remaining -= n
            return data
        return b"".join(self.chunks(n))

    def _extended(self, size: int) -> bytes:
        if size > MAX_EXTENDED_HEADER:
            raise TarFormatError(f"an extended header of {size} bytes")
        data = self._take(size)
        self._take(-size % BLOCK)
        return data

    def __iter__(self) -> Iterator[Member]:
        pax: dict[str, str] = {}
        long_name: str | None = None
        long_link: str | None = None
        while True:
            self._skip_content()
            if not self._fill(BLOCK):
                return  # no end-of-archive blocks: tarfile accepts that too (the diff_id covers the stream)
            header = self._take(BLOCK)
            if header.count(0) == BLOCK:
                return  # end of archive (what follows is padding)
            if not _checksum_ok(header):
                raise TarFormatError("bad header checksum")
            kind = header[156:157]
            size = _number(header[124:136])
            if size < 0:
                raise TarFormatError("negative size")
            if kind in (b"x", b"g"):
                records = _pax_records(self._extended(size))
                if kind == b"x":
                    pax = records
                continue  # global headers: nothing the importer reads comes from them
            if kind in (b"L", b"K"):
                text = _string(self._extended(size))
                if kind == b"L":
                    long_name = text
                else:
                    long_link = text
                continue
            name = _string(header[0:100])
            if header[257:262] == b"ustar" and header[345:346] != b"\0":
                name = _string(header[345:500]) + "/" + name
            name = pax.get("path", long_name if long_name is not None else name)
            linkname = pax.get("linkpath", long_link if long_link is not None else _string(header[157:257]))
            try:
                size = int(pax.get("size", size))
                uid = int(pax.get("uid", _number(header[108:116])))
                gid = int(pax.get("gid", _number(header[116:124])))
            except ValueError:
                raise TarFormatError("invalid number in a PAX header") from None
            if kind == b"\0" and name.endswith("/"):
                kind = DIRTYPE  # as tarfile: an old-style directory
            if kind == DIRTYPE:
                name = name.rstrip("/")
            if kind in NO_CONTENT:
                size = 0
            member = Member(name, linkname, kind, _number(header[100:108]), uid, gid, size)
            pax, long_name, long_link = {}, None, None
            self.remaining, self.padding = size, -size % BLOCK
            yield member
