"""The ISO 9660 ids of an ISO output: the blueprint's `[customizations.iso]` (Image Builder's `volume_id`,
`application_id`, `publisher`) where set, else defaults that name the OS from the image's os-release.

    resolve(blueprint.iso, facts.os_release, arch, "live")
      -> IsoMetadata(volume_id="debian-12-live-x86_64", application_id="Debian GNU/Linux 12 (bookworm) live
                     ISO", publisher="imgbuild", menu_title="Debian GNU/Linux 12 (bookworm) (live)")

`kind` says which ISO it is ("live", "installer"), so that the two ISOs of one image get different labels:
the volume id is the label the medium's GRUB and initramfs find it by.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from builder.arch import Arch
from builder.blueprint.model import IsoCustomization
from builder.iso.medium import check_ids

DEFAULT_PUBLISHER = "imgbuild"
_NOT_VOLID = re.compile(r"[^A-Za-z0-9_-]+")
_NOT_PRINTABLE_ASCII = re.compile(r"[^ -~]+")


@dataclass(frozen=True)
class IsoMetadata:
    volume_id: str
    application_id: str
    publisher: str
    menu_title: str  # the GRUB menu entry


def _os_words(os_release: Mapping[str, str]) -> tuple[str, str]:
    os_id = os_release.get("ID") or "linux"
    version = os_release.get("VERSION_ID") or ""
    return os_id, version


def default_volume_id(os_release: Mapping[str, str], arch: Arch, kind: str) -> str:
    """`<ID>-<VERSION_ID>-<kind>-<arch>`, reduced to what a volume id may hold; the arch is dropped first,
    then the text is cut, to fit 32 characters."""
    os_id, version = _os_words(os_release)
    words = [w for w in (_NOT_VOLID.sub("_", x).strip("_-") for x in (os_id, version, kind)) if w]
    full = "-".join([*words, arch.value])
    short = "-".join(words)
    return (full if len(full) <= 32 else short[:32]) or "imgbuild"


def resolve(
    custom: IsoCustomization | None, os_release: Mapping[str, str], arch: Arch, kind: str
) -> IsoMetadata:
    """The ids of a `kind` ISO: the blueprint's where it sets them, else the defaults (checked either way)."""
    name = os_release.get("PRETTY_NAME") or os_release.get("NAME") or "Linux"
    name = _NOT_PRINTABLE_ASCII.sub("?", name)
    custom = custom or IsoCustomization()
    meta = IsoMetadata(
        volume_id=custom.volume_id or default_volume_id(os_release, arch, kind),
        application_id=custom.application_id or f"{name} {kind} ISO"[:128],
        publisher=custom.publisher or DEFAULT_PUBLISHER,
        menu_title=f"{name} ({kind})",
    )
    check_ids(meta.volume_id, meta.application_id, meta.publisher)
    return meta
