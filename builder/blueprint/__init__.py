"""Image Builder-style blueprints for container-based images: the model and its loader.

`load_blueprint` / `parse_blueprint` read TOML, JSON or YAML, validate it against blueprints/schema.json and
the rules of images deployed from a container, and return a frozen `Blueprint`; `builder.customize.apply`
writes its customizations into a deployment.
"""

from builder.blueprint.loader import dump_toml, load_blueprint, parse_blueprint
from builder.blueprint.model import (
    Blueprint,
    BtrfsPartition,
    BtrfsSubvolume,
    DirectoryCustomization,
    DiskCustomization,
    DiskType,
    FileCustomization,
    FilesystemCustomization,
    FsType,
    Group,
    Ignition,
    LogicalVolume,
    LvmPartition,
    Partition,
    PartitionType,
    PlainPartition,
    Sshd,
    SshKey,
    User,
    kernel_quote,
)
from builder.blueprint.sizes import parse_size

__all__ = [
    "Blueprint",
    "BtrfsPartition",
    "BtrfsSubvolume",
    "DirectoryCustomization",
    "DiskCustomization",
    "DiskType",
    "FileCustomization",
    "FilesystemCustomization",
    "FsType",
    "Group",
    "Ignition",
    "LogicalVolume",
    "LvmPartition",
    "Partition",
    "PartitionType",
    "PlainPartition",
    "SshKey",
    "Sshd",
    "User",
    "dump_toml",
    "kernel_quote",
    "load_blueprint",
    "parse_blueprint",
    "parse_size",
]
