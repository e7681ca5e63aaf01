"""Mounting the target's other filesystems at boot: systemd mount units (bib's default) or /etc/fstab lines.

The root filesystem needs neither: the initramfs mounts it from `root=`. Units go into the deployment's
/etc/systemd/system and are enabled the way `systemctl enable` does it, with a symlink in
local-fs.target.wants; they mount by filesystem UUID (`/dev/disk/by-uuid/...`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from builder.ostree.deploy import Deployment

log = logging.getLogger(__name__)

UNIT_DIR = "etc/systemd/system"
WANTS_DIR = "local-fs.target.wants"

_UUID = re.compile(r"[0-9A-Fa-f][0-9A-Fa-f-]*")  # ext4/xfs/btrfs UUIDs and vfat volume ids (ABCD-1234)
_FIELD = re.compile(r"[^\s#\\]+")


@dataclass(frozen=True)
class MountSpec:
    where: str  # the mount point as the booted system sees it: /boot, /boot/efi, /var/log
    uuid: str  # the filesystem UUID
    fstype: str  # ext4, xfs, btrfs, vfat
    options: str  # mount options, comma-separated ("defaults" when there are none)

    def __post_init__(self) -> None:
        where = PurePosixPath(self.where)
        if not where.is_absolute() or str(where) != self.where or ".." in where.parts:
            raise ValueError(f"mount point must be a normalised absolute path: {self.where!r}")
        if self.where == "/":
            raise ValueError("the root filesystem needs no mount unit: the initramfs mounts it from root=")
        if not _UUID.fullmatch(self.uuid):
            raise ValueError(f"invalid filesystem UUID {self.uuid!r}")
        for name, value in (("fstype", self.fstype), ("options", self.options)):
            if not _FIELD.fullmatch(value):
                raise ValueError(f"invalid {name} {value!r} for {self.where}")

    @property
    def what(self) -> str:
        return f"/dev/disk/by-uuid/{self.uuid}"


def escape_path(path: str) -> str:
    """`systemd-escape --path`: the unit name stem of a mount point (/var/log -> var-log, / -> -)."""
    stripped = "/".join(part for part in path.split("/") if part)
    if not stripped:
        return "-"
    out = []
    for i, char in enumerate(stripped):
        if char == "/":
            out.append("-")
        elif char.isascii() and (char.isalnum() or char in ":_" or (char == "." and i > 0)):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def unit_name(where: str) -> str:
    return escape_path(where) + ".mount"


def unit_text(spec: MountSpec) -> str:
    # Mount units get their device dependency, the parent mount (/boot before /boot/efi, /var before
    # /var/log) and Before=local-fs.target from systemd itself.
    return (
        "# Written by imgbuild\n"
        "[Unit]\n"
        f"Description=Mount {spec.where}\n"
        "\n"
        "[Mount]\n"
        f"What={spec.what}\n"
        f"Where={spec.where}\n"
        f"Type={spec.fstype}\n"
        f"Options={spec.options}\n"
        "\n"
        "[Install]\n"
        "WantedBy=local-fs.target\n"
    )


def _write_file(path: Path, text: str, mode: int = 0o644) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.chmod(mode)
    partial.replace(path)


def _write_units(etc_root: Path, mounts: Sequence[MountSpec]) -> None:
    unit_dir = etc_root / UNIT_DIR
    wants = unit_dir / WANTS_DIR
    wants.mkdir(parents=True, exist_ok=True)
    for spec in mounts:
        name = unit_name(spec.where)
        _write_file(unit_dir / name, unit_text(spec))
        link = wants / name
        if link.is_symlink() or link.exists():
            link.unlink()
        # Absolute, as the booted system sees it: what `systemctl enable` writes.
        link.symlink_to(f"/{UNIT_DIR}/{name}")
        log.debug("mount unit %s for %s", name, spec.where)


def fstab_line(spec: MountSpec) -> str:
    # dump 0, pass 0: like the units, no fsck ordering is asked for.
    return f"UUID={spec.uuid} {spec.where} {spec.fstype} {spec.options} 0 0"


def merge_fstab(existing: str, mounts: Sequence[MountSpec]) -> str:
    """`existing` without its lines for the mount points in `mounts`, then a line for each of them."""
    wheres = {spec.where for spec in mounts}
    kept = []
    for line in existing.splitlines():
        fields = line.split()
        if fields and not fields[0].startswith("#") and len(fields) >= 2 and fields[1] in wheres:
            continue
        kept.append(line)
    return "\n".join([*kept, *(fstab_line(spec) for spec in mounts)]) + "\n"


def write_mounts(
    deployment: Deployment, mounts: Sequence[MountSpec], *, style: Literal["units", "fstab"] = "units"
) -> None:
    """Make the booted system mount `mounts`: enabled mount units or fstab lines in the deployment's /etc."""
    wheres = [spec.where for spec in mounts]
    if len(set(wheres)) != len(wheres):
        raise ValueError(f"a mount point is given twice: {wheres}")
    etc_root = deployment.path
    if style == "units":
        _write_units(etc_root, mounts)
    elif style == "fstab":
        fstab = etc_root / "etc" / "fstab"
        existing = fstab.read_text() if fstab.exists() else ""
        mode = fstab.stat().st_mode & 0o7777 if fstab.exists() else 0o644
        _write_file(fstab, merge_fstab(existing, mounts), mode)
    else:
        raise ValueError(f"unknown mount style {style!r}")
    # The mount points must exist in the tree the booted system sees: /var/... in the stateroot's var,
    # /boot/... on the /boot filesystem (the sysroot's boot/). The deployment's own top level is immutable
    # (ostree sets the immutable flag on it), so other mount points must come with the image.
    for where in wheres:
        if where.startswith("/var/"):
            (deployment.var / where.removeprefix("/var/")).mkdir(mode=0o755, parents=True, exist_ok=True)
        elif where.startswith("/boot/"):
            (deployment.sysroot / where.lstrip("/")).mkdir(mode=0o755, parents=True, exist_ok=True)
        elif not (deployment.path / where.lstrip("/")).exists():
            log.warning("mount point %s does not exist in the image; systemd will create it at boot", where)


def swap_unit_text(uuid: str) -> str:
    return (
        "# Written by imgbuild\n"
        "[Unit]\n"
        f"Description=Swap on {uuid}\n"
        "\n"
        "[Swap]\n"
        f"What=/dev/disk/by-uuid/{uuid}\n"
        "\n"
        "[Install]\n"
        "WantedBy=swap.target\n"
    )


def write_swaps(deployment: Deployment, uuids: Sequence[str]) -> None:
    """Enabled swap units (`dev-disk-by\\x2duuid-<uuid>.swap`) for the swap partitions with these UUIDs."""
    unit_dir = deployment.path / UNIT_DIR
    wants = unit_dir / "swap.target.wants"
    for uuid in uuids:
        if not _UUID.fullmatch(uuid):
            raise ValueError(f"invalid swap UUID {uuid!r}")
        name = escape_path(f"/dev/disk/by-uuid/{uuid}") + ".swap"
        wants.mkdir(parents=True, exist_ok=True)
        _write_file(unit_dir / name, swap_unit_text(uuid))
        link = wants / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(f"/{UNIT_DIR}/{name}")
