"""Escape arbitrary strings (image references, layer digests) into valid ostree ref names.

The rules are ostree-ext's, so that the refs we write are the ones a booted bootc or rpm-ostree looks for:
ASCII alphanumerics and `-` pass through, `/` passes only after an alphanumeric and when more follows
(so `//` gives `/_2F_`), `_` becomes `__`, and every other character becomes `_<code point in upper-case
hex, at least 2 digits>_` (`:` -> `_3A_`).
"""

from __future__ import annotations

from builder.errors import ImportFailure

# The prefixes of the refs ostree-ext (and so bootc and rpm-ostree) uses for container images.
LAYER_PREFIX = "ostree/container/blob"
IMAGE_PREFIX = "ostree/container/image"


def _is_alnum(c: str) -> bool:
    return c.isascii() and c.isalnum()


def escape_ref(s: str) -> str:
    """`s` as a valid ref component sequence, reversibly (see unescape_ref)."""
    if not s or "\0" in s:
        raise ImportFailure(f"cannot make a ref name of {s!r}", hint="give a non-empty image reference")
    out: list[str] = []
    last = len(s) - 1
    for i, c in enumerate(s):
        if _is_alnum(c) or c == "-":
            out.append(c)
        elif c == "_":
            out.append("__")
        elif c == "/" and 0 < i < last and _is_alnum(s[i - 1]):
            out.append("/")
        else:
            out.append(f"_{ord(c):02X}_")
    return "".join(out)


def unescape_ref(s: str) -> str:
    """The inverse of escape_ref; ImportFailure on text escape_ref cannot have produced."""
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "_":
            out.append(c)
            i += 1
            continue
        if s.startswith("__", i):
            out.append("_")
            i += 2
            continue
        end = s.find("_", i + 1)
        code = s[i + 1 : end] if end > i else ""
        try:
            out.append(chr(int(code, 16)))
        except ValueError:
            raise ImportFailure(
                f"invalid escaped ref {s!r}", hint="the ref was not written by imgbuild or ostree-ext"
            ) from None
        i = end + 1
    return "".join(out)


def layer_ref(digest: str) -> str:
    """`ostree/container/blob/<escaped digest>`: the ref that records an imported layer."""
    return f"{LAYER_PREFIX}/{escape_ref(digest)}"


def image_ref(imgref: str) -> str:
    """`ostree/container/image/<escaped imgref>`: the ref of an imported image's merge commit."""
    return f"{IMAGE_PREFIX}/{escape_ref(imgref)}"
