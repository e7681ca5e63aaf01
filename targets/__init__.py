"""Output targets: one module per target (qcow2, raw, vmdk, vhd, gce, ova, ami), its JSON Schema beside it.

Importing this package registers every target as the stage kind `target.<name>`; the planner, the runner and
the CLI learn the targets from here. Adding a target is adding its module (and schema) to TARGET_MODULES.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from builder.errors import ImgbuildError

if TYPE_CHECKING:
    from targets.base import Target

# In the order help texts list them.
TARGET_MODULES = (
    "targets.qcow2",
    "targets.raw",
    "targets.vmdk",
    "targets.vhd",
    "targets.gce",
    "targets.ova",
    "targets.ami",
    "targets.live_iso",
    "targets.iso",
)


@cache
def all_targets() -> dict[str, type[Target]]:
    """Every target by name, in TARGET_MODULES order."""
    from targets.base import register_all

    for module in TARGET_MODULES:
        importlib.import_module(module)
    registered = register_all()
    order = [m.rpartition(".")[2].replace("_", "-") for m in TARGET_MODULES]  # live_iso: live-iso
    return {name: registered[name] for name in sorted(registered, key=order.index)}


def names() -> tuple[str, ...]:
    return tuple(all_targets())


# bootc-image-builder's installer types that imgbuild does not make: its own installer ISO is `iso`.
_INSTALLERS = ("anaconda-iso", "bootc-installer", "pxe-tar-xz")


def get(name: str) -> type[Target]:
    try:
        return all_targets()[name]
    except KeyError:
        if name in _INSTALLERS:
            raise ImgbuildError(
                f"{name!r} is an installer type of bootc-image-builder (Anaconda or PXE), which imgbuild "
                "does not make",
                hint="imgbuild's installer ISO is the type iso (it writes the raw disk to the chosen disk)",
            ) from None
        raise ImgbuildError(
            f"unknown output type {name!r}", hint=f"use one of: {', '.join(names())}"
        ) from None


# The stage registry imports this package to register the target stage kinds.
all_targets()
