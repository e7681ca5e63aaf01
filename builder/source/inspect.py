"""What an image holds that decides how it boots: its kernels, and a summary for people and JSON.

Kernels are found as `usr/lib/modules/<kver>/vmlinuz`: in the ostree commit layer, both as tar paths (every
path of the v0 layout; the commit layer's own content in v1) and in the commit's dirtree objects (which the
commit layer always carries, so a kernel that sits in a chunk layer is still seen); then in the derived
layers, with their whiteouts applied in order; and from the `ostree.linux` label. Chunk layers are not read:
they are most of the image's bytes.
"""

from __future__ import annotations

import re
import tarfile
from typing import Any

from builder.errors import NotBootable, SourceError
from builder.source.commit_tree import MAX_METADATA_OBJECT, kernels_in_commit, metadata_object
from builder.source.image import Image, Layer, LayerRole
from builder.source.verify import open_layer

LINUX_LABEL = "ostree.linux"
_MODULES = "usr/lib/modules/"
_KERNEL_RE = re.compile(r"usr/lib/modules/([^/]+)/vmlinuz")
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


def _normalize(name: str) -> str:
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name


def _apply_layer(image: Image, layer: Layer, kernels: set[str]) -> None:
    """Update `kernels` with what the layer adds (vmlinuz files) and removes (whiteouts)."""
    found: set[str] = set()
    removed: set[str] = set()
    opaque = False
    is_commit_layer = layer.role is LayerRole.OSTREE_COMMIT
    commits: dict[str, bytes] = {}
    dirtrees: dict[str, bytes] = {}
    try:
        with open_layer(image, layer) as stream, tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                name = _normalize(member.name)
                if is_commit_layer and member.isfile() and member.size <= MAX_METADATA_OBJECT:
                    meta = metadata_object(name)
                    if meta is not None:
                        f = archive.extractfile(member)
                        if f is not None:
                            (commits if meta[1] == "commit" else dirtrees)[meta[0]] = f.read()
                        continue
                if not name.startswith(_MODULES):
                    continue
                rest = name[len(_MODULES) :]
                if rest == _OPAQUE:
                    opaque = True
                elif rest.startswith(_WHITEOUT):
                    removed.add(rest[len(_WHITEOUT) :])
                elif rest.endswith("/" + _WHITEOUT + "vmlinuz"):
                    removed.add(rest.split("/", 1)[0])
                else:
                    match = _KERNEL_RE.fullmatch(name)
                    if match and (member.isfile() or member.islnk() or member.issym()):
                        found.add(match[1])
    except tarfile.TarError as e:
        raise SourceError(
            f"layer {layer.digest} is not a valid tar archive ({e})",
            hint="the image is corrupt or was not written by a conforming tool",
        ) from e
    # The commit's own tree names the kernels that sit in chunk layers, which are not read.
    commit = commits.get(image.ostree_commit or "") or (next(iter(commits.values())) if commits else None)
    if commit is not None:
        found |= kernels_in_commit(commit, dirtrees)
    if opaque:
        kernels.clear()
    kernels.difference_update(removed)
    kernels.update(found)


def scanned_layers(image: Image) -> tuple[Layer, ...]:
    """The layers whose paths tell the kernels: the ostree commit layer, then the derived ones, in order."""
    return tuple(layer for layer in image.layers if layer.role is not LayerRole.OSTREE_CHUNK)


def kernel_versions(image: Image) -> tuple[str, ...]:
    """The kernel versions of the image: the `ostree.linux` label and the vmlinuz files its layers carry."""
    kernels: set[str] = set()
    for layer in scanned_layers(image):
        _apply_layer(image, layer, kernels)
    label = image.labels.get(LINUX_LABEL)
    if label:
        kernels.add(label)
    return tuple(sorted(kernels))


def require_bootable(image: Image, kernels: tuple[str, ...] | None = None) -> None:
    """NotBootable for an image with neither an ostree commit nor a kernel under /usr/lib/modules.

    The layers are scanned for kernels (`kernels` None) only when there is no ostree commit to go by.
    """
    if image.ostree_commit is not None:
        return
    if kernels is None:
        kernels = kernel_versions(image)
    if not kernels:
        raise NotBootable(
            f"{image.reference} has no ostree commit and no kernel in /usr/lib/modules/<version>/vmlinuz",
            hint="build the image FROM an ostree-native or bootc base image",
        )


def describe(image: Image, kernels: tuple[str, ...] | None = None) -> dict[str, Any]:
    """A JSON-ready summary. `kernels` defaults to scanning the image (which verifies those layers)."""
    if kernels is None:
        kernels = kernel_versions(image)
    bootable = image.ostree_commit is not None or bool(kernels)
    return {
        "reference": image.reference,
        "digest": image.manifest_digest,
        "architecture": str(image.architecture),
        "created": image.created,
        "layout": str(image.layout),
        "ostree_commit": image.ostree_commit,
        "labels": dict(sorted(image.labels.items())),
        "layers": [
            {
                "index": layer.index,
                "role": str(layer.role),
                "digest": layer.digest,
                "size": layer.size,
                "diff_id": layer.diff_id,
                "compression": str(layer.compression),
                "created_by": layer.created_by,
                "annotations": dict(layer.annotations),
            }
            for layer in image.layers
        ],
        "kernels": list(kernels),
        "bootable": bootable,
    }
