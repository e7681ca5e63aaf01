"""The typed blueprint: what the loader produces and the planner and customizations consume.

Everything is frozen; sizes are bytes, modes are ints, kernel.append is split into arguments. `to_dict()`
gives the normalised document (the one `dump_toml` writes and the loader reads back to an equal Blueprint).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any


class DiskType(enum.StrEnum):
    GPT = "gpt"
    DOS = "dos"


class PartitionType(enum.StrEnum):
    PLAIN = "plain"
    LVM = "lvm"
    BTRFS = "btrfs"


class FsType(enum.StrEnum):
    EXT4 = "ext4"
    XFS = "xfs"
    VFAT = "vfat"
    SWAP = "swap"
    NONE = "none"


@dataclass(frozen=True)
class User:
    name: str
    description: str | None = None
    password: str | None = None  # a crypt hash, plain text (hashed when applied) or "" (no password)
    key: str | None = None
    home: str | None = None
    shell: str | None = None
    groups: tuple[str, ...] = ()
    uid: int | None = None
    gid: int | None = None
    expiredate: int | None = None  # days since 1970-01-01, as in /etc/shadow
    force_password_reset: bool = False


@dataclass(frozen=True)
class Group:
    name: str
    gid: int | None = None


@dataclass(frozen=True)
class SshKey:
    user: str
    key: str


@dataclass(frozen=True)
class FileCustomization:
    path: str
    user: str | int | None = None
    group: str | int | None = None
    mode: int | None = None
    data: str | None = None


@dataclass(frozen=True)
class DirectoryCustomization:
    path: str
    user: str | int | None = None
    group: str | int | None = None
    mode: int | None = None
    ensure_parents: bool = False


@dataclass(frozen=True)
class FilesystemCustomization:
    mountpoint: str
    minsize: int


@dataclass(frozen=True)
class PlainPartition:
    minsize: int
    mountpoint: str | None = None
    label: str | None = None
    fs_type: FsType | None = None
    part_type: str | None = None
    part_label: str | None = None
    part_uuid: str | None = None
    type: PartitionType = field(default=PartitionType.PLAIN, init=False)


@dataclass(frozen=True)
class LogicalVolume:
    minsize: int
    name: str | None = None
    mountpoint: str | None = None
    label: str | None = None
    fs_type: FsType | None = None


@dataclass(frozen=True)
class LvmPartition:
    minsize: int
    name: str | None = None  # the volume group's name
    logical_volumes: tuple[LogicalVolume, ...] = ()
    part_type: str | None = None
    part_label: str | None = None
    part_uuid: str | None = None
    type: PartitionType = field(default=PartitionType.LVM, init=False)


@dataclass(frozen=True)
class BtrfsSubvolume:
    name: str
    mountpoint: str


@dataclass(frozen=True)
class BtrfsPartition:
    minsize: int
    subvolumes: tuple[BtrfsSubvolume, ...] = ()
    part_type: str | None = None
    part_label: str | None = None
    part_uuid: str | None = None
    type: PartitionType = field(default=PartitionType.BTRFS, init=False)


Partition = PlainPartition | LvmPartition | BtrfsPartition


@dataclass(frozen=True)
class DiskCustomization:
    partitions: tuple[Partition, ...] = ()
    type: DiskType | None = None
    minsize: int | None = None
    start_offset: int | None = None
    sector_size: int | None = None


@dataclass(frozen=True)
class Ignition:
    """Exactly one of the two is set: a config placed on /boot, or a URL fetched on first boot."""

    embedded_config: bytes | None = None  # the decoded Ignition JSON
    firstboot_url: str | None = None


@dataclass(frozen=True)
class Sshd:
    password_authentication: bool | None = None
    kbd_interactive_authentication: bool | None = None
    client_alive_interval: int | None = None
    permit_root_login: str | None = None


_NEEDS_KERNEL_QUOTES = re.compile(r"\s")


def kernel_quote(argument: str) -> str:
    """One kernel command-line word: the kernel understands `key="a value"` (double quotes only)."""
    if not _NEEDS_KERNEL_QUOTES.search(argument):
        return argument
    key, eq, value = argument.partition("=")
    return f'{key}="{value}"' if eq else f'"{argument}"'


@dataclass(frozen=True)
class IsoCustomization:
    """[customizations.iso]: the ISO 9660 ids of ISO outputs (unset: builder/iso/metadata.py's defaults)."""

    volume_id: str | None = None
    application_id: str | None = None
    publisher: str | None = None


@dataclass(frozen=True)
class InstallerCustomization:
    """[customizations.installer] and `installation_device`: how the installer ISO (iso) picks its disk."""

    unattended: bool = False  # install without asking (to `device`, or the only disk there is)
    device: str | None = None  # customizations.installation_device


@dataclass(frozen=True)
class Blueprint:
    name: str = ""
    description: str = ""
    version: str = "0.0.0"
    users: tuple[User, ...] = ()
    groups: tuple[Group, ...] = ()
    sshkeys: tuple[SshKey, ...] = ()
    hostname: str | None = None
    kernel_append: tuple[str, ...] = ()
    timezone: str | None = None
    ntpservers: tuple[str, ...] = ()
    languages: tuple[str, ...] = ()
    keyboard: str | None = None
    services_enabled: tuple[str, ...] = ()
    services_disabled: tuple[str, ...] = ()
    services_masked: tuple[str, ...] = ()
    files: tuple[FileCustomization, ...] = ()
    directories: tuple[DirectoryCustomization, ...] = ()
    filesystems: tuple[FilesystemCustomization, ...] = ()
    disk: DiskCustomization | None = None
    ignition: Ignition | None = None
    fips: bool = False
    sshd: Sshd | None = None
    container_ref: str | None = None  # the image to build from, when the blueprint names it
    iso: IsoCustomization | None = None
    installer: InstallerCustomization | None = None

    @classmethod
    def empty(cls) -> Blueprint:
        return cls()

    def kernel_arguments(self, *, ignition_platform: str = "metal") -> tuple[str, ...]:
        """The kernel command-line words this blueprint adds, each quoted for the kernel.

        `ignition_platform` is Ignition's name for where the image runs (metal, qemu, aws, gcp...): only the
        target format knows it, so the planner passes it.
        """
        words = [kernel_quote(a) for a in self.kernel_append]
        if self.fips:
            words.append("fips=1")
        if self.ignition is not None:
            words += [f"ignition.platform.id={ignition_platform}", "ignition.firstboot"]
            if self.ignition.firstboot_url is not None:
                words.append(f"ignition.config.url={self.ignition.firstboot_url}")
        return tuple(words)

    def to_dict(self) -> dict[str, Any]:
        from builder.blueprint.document import blueprint_to_dict

        return blueprint_to_dict(self)
