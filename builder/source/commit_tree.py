"""The kernels an ostree commit holds, read from the metadata objects its commit layer carries.

A chunked image's commit layer has the `.commit` object and every `.dirtree`, but `vmlinuz` itself usually
sits in a chunk layer. Walking the dirtrees from the commit's root to `usr/lib/modules/<kver>/` tells the
kernels without reading the chunks. The objects come from the image, so they are parsed as untrusted
GVariants (GLib answers malformed data with empty values) and only four levels deep.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

COMMIT_TYPE = "(a{sv}aya(say)sstayay)"
DIRTREE_TYPE = "(a(say)a(sayay))"
_OBJECT_RE = re.compile(r"sysroot/ostree/repo/objects/([0-9a-f]{2})/([0-9a-f]{62})\.(commit|dirtree)")
# One dirtree lists one directory; anything near this is not one, and is not kept in memory.
MAX_METADATA_OBJECT = 16 * 1024 * 1024


def metadata_object(name: str) -> tuple[str, str] | None:
    """(checksum, "commit" | "dirtree") for a tar path naming such an object, else None."""
    match = _OBJECT_RE.fullmatch(name)
    if match is None:
        return None
    return match[1] + match[2], match[3]


def _parse(type_string: str, data: bytes) -> Any:
    from builder.ostree.gi import GLib  # only images with an ostree commit need libostree's GLib

    variant = GLib.Variant.new_from_bytes(GLib.VariantType.new(type_string), GLib.Bytes.new(data), False)
    return variant.unpack()


def _hex(checksum: Any) -> str:
    return bytes(checksum).hex() if isinstance(checksum, list | bytes) else ""


def _subdirs(dirtree: bytes | None) -> dict[str, str]:
    if dirtree is None:
        return {}
    _, dirs = _parse(DIRTREE_TYPE, dirtree)
    return {name: _hex(tree) for name, tree, _meta in dirs}


def _files(dirtree: bytes | None) -> set[str]:
    if dirtree is None:
        return set()
    files, _ = _parse(DIRTREE_TYPE, dirtree)
    return {name for name, _checksum in files}


def kernels_in_commit(commit: bytes, dirtrees: Mapping[str, bytes]) -> set[str]:
    """The `<kver>` of every `usr/lib/modules/<kver>/vmlinuz` in the commit's tree."""
    fields = _parse(COMMIT_TYPE, commit)
    tree = dirtrees.get(_hex(fields[6]))
    for part in ("usr", "lib", "modules"):
        tree = dirtrees.get(_subdirs(tree).get(part, ""))
    return {kver for kver, checksum in _subdirs(tree).items() if "vmlinuz" in _files(dirtrees.get(checksum))}
