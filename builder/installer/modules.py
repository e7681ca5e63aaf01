"""The image's kernel modules the installer needs, with their dependencies from the image's modules.dep."""

from __future__ import annotations

from collections.abc import Iterable

# Drivers for the installer medium (CD over AHCI/virtio-scsi/USB, a USB stick) and the target disk
# (virtio, SATA, NVMe, SCSI, USB), and the filesystems the installer mounts (ISO 9660; xfs to grow it).
# Absent ones are skipped: a kernel may have them built in, or not at all.
WANTED = (
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    "ahci",
    "ata_piix",
    "nvme",
    "sd_mod",
    "sr_mod",
    "cdrom",
    "isofs",
    "xhci_pci",
    "xhci_plat_hcd",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
    "usb_storage",
    "uas",
    "xfs",
)


def _name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, list[str]]]:
    """module name -> (its path, the paths it depends on)."""
    found: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if ":" not in line:
            continue
        path, _, deps = line.partition(":")
        found[_name(path)] = (path.strip(), deps.split())
    return found


def load_order(modules_dep: str, wanted: Iterable[str] = WANTED) -> list[str]:
    """The paths (relative to the modules directory) of the wanted modules present in `modules_dep` and of
    everything they depend on, each after its dependencies."""
    table = parse_modules_dep(modules_dep)
    by_path = dict(table.values())
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for dep in by_path.get(path, []):
            visit(dep)
        order.append(path)

    for name in wanted:
        if name in table:
            visit(table[name][0])
    return order
