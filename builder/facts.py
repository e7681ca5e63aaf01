"""What the planner needs to know about an image, read from its imported commit (no checkout)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder import run
from builder.arch import Arch
from builder.ostree.imageconfig import tree_composefs_policy, tree_image_kargs
from builder.ostree.repoquery import CommitTree
from builder.source.image import Image

# Where Ignition lives in images that use it (its dracut module; Fedora CoreOS, RHCOS, Flatcar).
IGNITION_PATHS = (
    "usr/lib/dracut/modules.d/30ignition",
    "usr/lib/dracut/modules.d/35ignition",
    "usr/bin/ignition",
)
# Where image-based systems ship their own EFI binaries (shim + GRUB), newest convention first.
EFI_PAYLOAD_DIRS = ("usr/lib/bootupd/updates/EFI", "usr/lib/ostree-boot/efi/EFI", "usr/lib/efi")


@dataclass(frozen=True)
class ImageFacts:
    reference: str  # as skopeo takes it
    origin: str  # as bootc records it in the origin file
    digest: str  # manifest digest
    arch: Arch
    size: int  # sum of the layers' sizes as stored
    commit: str  # the merge commit that gets deployed
    kernel: str | None
    grub_platforms: tuple[str, ...]  # GRUB module directories the image ships: i386-pc, x86_64-efi, arm64-efi
    grub_blscfg: bool  # the image's GRUB has the blscfg command (Fedora's does, Debian's does not)
    efi_payload: str | None  # directory of the image's own shim/GRUB EFI binaries, if any
    selinux_policy: str | None  # SELINUXTYPE when the image carries a policy
    composefs_kargs: tuple[
        str, ...
    ]  # what the image's prepare-root.conf needs from a deploy without composefs
    composefs_reason: str | None  # why, for the manifest
    image_kargs: tuple[str, ...]  # the image's own /usr/lib/bootc/kargs.d arguments
    os_name: str
    # How the image was verified (builder.source.trust): extra options of container.import, ostree.deploy.
    import_options: Mapping[str, Any] = field(default_factory=dict)
    deploy_options: Mapping[str, Any] = field(default_factory=dict)
    # Bytes of the commit's regular files (what the root filesystem must hold); 0: unknown.
    content_size: int = 0
    # The image configures itself with Ignition on first boot (it needs ignition.platform.id=).
    ignition: bool = False
    # The image's os-release (ID, VERSION_ID, NAME...): the ISO targets' default volume id names the OS.
    os_release: Mapping[str, str] = field(default_factory=dict)


def _shell_vars(text: str | None) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            values[key.strip()] = value.strip().strip("\"'")
    return values


def content_size(repo: Path, commit: str) -> int:
    """The bytes of the commit's regular files, from `ostree ls -R` (a C walk of the tree: ~1 s for 8000
    files; walking it through GI from Python takes much longer)."""
    total = 0
    for line in run.run(["ostree", f"--repo={repo}", "ls", "-R", commit]).out.splitlines():
        fields = line.split(None, 4)
        if len(fields) == 5 and fields[0].startswith("-"):
            total += int(fields[3])
    return total


def gather(image: Image, *, reference: str, origin: str, repo: Path, commit: str) -> ImageFacts:
    tree = CommitTree(repo, commit)
    kernels = [k for k in tree.listdir("usr/lib/modules") if tree.exists(f"usr/lib/modules/{k}/vmlinuz")]
    platforms = tuple(p for p in ("i386-pc", "x86_64-efi", "arm64-efi") if tree.is_dir(f"usr/lib/grub/{p}"))
    blscfg = any(tree.exists(f"usr/lib/grub/{p}/blscfg.mod") for p in platforms)
    payload = next((d for d in EFI_PAYLOAD_DIRS if tree.is_dir(d)), None)
    selinux = _shell_vars(tree.read_text("usr/etc/selinux/config")).get("SELINUXTYPE")
    if selinux and not tree.exists(f"usr/etc/selinux/{selinux}/contexts/files/file_contexts"):
        selinux = None
    composefs = tree_composefs_policy(tree)
    os_release = _shell_vars(tree.read_text("usr/lib/os-release") or tree.read_text("usr/etc/os-release"))
    return ImageFacts(
        reference=reference,
        origin=origin,
        digest=image.manifest_digest,
        arch=image.architecture,
        size=sum(layer.size for layer in image.layers),
        commit=commit,
        kernel=sorted(kernels)[-1] if kernels else None,
        grub_platforms=platforms,
        grub_blscfg=blscfg,
        efi_payload=payload,
        selinux_policy=selinux or None,
        composefs_kargs=composefs.kargs,
        composefs_reason=composefs.reason,
        image_kargs=tree_image_kargs(tree, image.architecture),
        os_name=os_release.get("PRETTY_NAME", os_release.get("NAME", "Linux")),
        content_size=content_size(repo, commit),
        ignition=any(tree.exists(path) for path in IGNITION_PATHS),
        os_release=os_release,
    )
