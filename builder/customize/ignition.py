"""customizations.ignition: the embedded config on /boot, and the first-boot stamp Ignition looks for.

The kernel arguments (ignition.platform.id, ignition.firstboot, ignition.config.url) come from
Blueprint.kernel_arguments(); here only the files are written.
"""

from __future__ import annotations

from builder.blueprint.model import Blueprint
from builder.customize.target import Target
from builder.errors import BlueprintError
from builder.sizefmt import human

CONFIG = "/boot/ignition/config.ign"
# CoreOS-style GRUB configs add `ignition.firstboot` while this file exists; Ignition removes it after use.
FIRSTBOOT_STAMP = "/boot/ignition.firstboot"


def check_ignition(bp: Blueprint, target: Target) -> None:
    if bp.ignition is not None and target.boot_root is None:
        raise BlueprintError(
            "customizations.ignition: this image has no /boot to hold the Ignition files",
            hint="Ignition needs a disk image with a /boot partition or directory",
        )


def apply_ignition(bp: Blueprint, target: Target) -> list[str]:
    if bp.ignition is None:
        return []
    check_ignition(bp, target)
    done = []
    if bp.ignition.embedded_config is not None:
        target.write(CONFIG, bp.ignition.embedded_config, 0o600)
        done.append(f"ignition: embedded config ({human(len(bp.ignition.embedded_config))}) in {CONFIG}")
    else:
        done.append(f"ignition: config fetched on first boot from {bp.ignition.firstboot_url}")
    target.write(FIRSTBOOT_STAMP, b"")
    return done
