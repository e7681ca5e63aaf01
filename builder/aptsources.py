"""The Debian archive the host's apt uses, read from its sources (one-line and deb822 formats).

The example OS is built from the same archive as the host's own packages, so no mirror is written into the
project: whatever archive or proxy this machine is set up with is the one used.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_D = Path("/etc/apt/sources.list.d")


def _one_line(text: str) -> Iterable[tuple[str, str]]:
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split()
        if len(fields) < 3 or fields[0] != "deb":
            continue
        if fields[1].startswith("["):  # options: [arch=amd64 signed-by=...]
            while fields and not fields[1].endswith("]"):
                fields.pop(1)
            fields.pop(1)
        if len(fields) >= 3:
            yield fields[2], fields[1]


def _deb822(text: str) -> Iterable[tuple[str, str]]:
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for suite in fields.get("suites", "").split():
            for uri in fields.get("uris", "").split():
                yield suite, uri


def host_archives(sources: Path = APT_SOURCES, sources_d: Path = APT_SOURCES_D) -> dict[str, str]:
    """Suite -> archive URI, the first entry the host's apt has for each suite."""
    found: dict[str, str] = {}
    entries: list[tuple[str, str]] = []
    if sources.is_file():
        entries += _one_line(sources.read_text())
    if sources_d.is_dir():
        for path in sorted(sources_d.iterdir()):
            if path.suffix == ".list":
                entries += _one_line(path.read_text())
            elif path.suffix == ".sources":
                entries += _deb822(path.read_text())
    for suite, uri in entries:
        found.setdefault(suite, uri)
    return found
