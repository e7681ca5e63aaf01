"""Output formats as data: name, file suffix, qemu-img format and options, MIME type."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Format(enum.StrEnum):
    RAW = "raw"
    QCOW2 = "qcow2"


@dataclass(frozen=True)
class FormatSpec:
    format: Format
    suffix: str
    qemu_format: str  # what `qemu-img info` reports for a correct output
    create_options: tuple[str, ...]  # qemu-img -o options
    mime: str
    compressible: bool  # whether qemu-img convert -c applies


FORMATS: dict[Format, FormatSpec] = {
    Format.RAW: FormatSpec(Format.RAW, ".raw", "raw", (), "application/octet-stream", False),
    Format.QCOW2: FormatSpec(
        Format.QCOW2, ".qcow2", "qcow2", ("compat=1.1",), "application/x-qemu-disk", True
    ),
}

# The formats the planner can build, in the order help texts list them.
DISK_FORMATS: tuple[Format, ...] = (Format.QCOW2, Format.RAW)
