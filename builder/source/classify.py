"""Which layers carry the ostree commit, as ostree-ext decides it (research/ostree.md §1.2).

Order of the tests, as the importers apply them: `ostree.final-diffid` (chunked, current), `ostree.diffid`
(legacy v0), `ostree.commit` alone (legacy v0 without diffid labels), nothing (a bootc image with no ostree
base: every layer is derived).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from builder.errors import SourceError
from builder.source.image import Layer, LayerRole, Layout
from builder.source.oci import Config, Manifest, compression_of

COMMIT_LABEL = "ostree.commit"
FINAL_DIFFID_LABEL = "ostree.final-diffid"
LEGACY_DIFFID_LABEL = "ostree.diffid"


@dataclass(frozen=True)
class Classification:
    layout: Layout
    roles: tuple[LayerRole, ...]
    ostree_commit: str | None  # the `ostree.commit` label, when present


def _position(diff_ids: Sequence[str], label: str, value: str, source: str) -> int:
    try:
        return list(diff_ids).index(value)
    except ValueError:
        raise SourceError(
            f"{source}: its label {label}={value} names no layer of the image",
            hint="the image's labels do not match its layers; it was not written by ostree-ext or rpm-ostree",
        ) from None


def classify(labels: Mapping[str, str], diff_ids: Sequence[str], *, source: str = "image") -> Classification:
    """The layout and each layer's role, from the config labels and the config's diff_ids."""
    count = len(diff_ids)
    commit = labels.get(COMMIT_LABEL) or None
    final = labels.get(FINAL_DIFFID_LABEL)
    legacy = labels.get(LEGACY_DIFFID_LABEL)
    has_ostree = final is not None or legacy is not None or commit is not None
    if has_ostree and count == 0:
        raise SourceError(f"{source}: it has ostree labels but no layers", hint="the image is incomplete")
    if final is not None:
        last = _position(diff_ids, FINAL_DIFFID_LABEL, final, source)
        roles = [LayerRole.OSTREE_COMMIT]
        roles += [LayerRole.OSTREE_CHUNK] * last
        roles += [LayerRole.DERIVED] * (count - last - 1)
        return Classification(Layout.CHUNKED, tuple(roles), commit)
    if legacy is not None:
        at = _position(diff_ids, LEGACY_DIFFID_LABEL, legacy, source)
        roles = [LayerRole.OSTREE_CHUNK] * at + [LayerRole.OSTREE_COMMIT]
        roles += [LayerRole.DERIVED] * (count - at - 1)
        return Classification(Layout.LEGACY, tuple(roles), commit)
    if commit is not None:
        roles = [LayerRole.OSTREE_COMMIT] + [LayerRole.DERIVED] * (count - 1)
        return Classification(Layout.LEGACY_UNLABELLED, tuple(roles), commit)
    return Classification(Layout.BOOTC, (LayerRole.DERIVED,) * count, None)


def history_for_layers(config: Config) -> tuple[str | None, ...] | None:
    """Each layer's `created_by`, when the non-empty history entries line up one to one with the layers."""
    entries = [entry for entry in config.history if not entry.empty_layer]
    if len(entries) != len(config.diff_ids):
        return None
    return tuple(entry.created_by for entry in entries)


def build_layers(
    manifest: Manifest, config: Config, roles: Sequence[LayerRole], *, source: str
) -> tuple[Layer, ...]:
    """The Layer records: manifest descriptors joined with the config's diff_ids, roles and history."""
    if len(manifest.layers) != len(config.diff_ids):
        raise SourceError(
            f"{source}: its manifest lists {len(manifest.layers)} layers but its config "
            f"{len(config.diff_ids)} diff_ids",
            hint="the image is inconsistent; it was not written by a conforming tool",
        )
    created_by = history_for_layers(config)
    return tuple(
        Layer(
            index=i,
            digest=descriptor.digest,
            size=descriptor.size,
            diff_id=config.diff_ids[i],
            media_type=descriptor.media_type,
            compression=compression_of(descriptor.media_type),
            role=roles[i],
            annotations=dict(descriptor.annotations),
            created_by=created_by[i] if created_by is not None else None,
        )
        for i, descriptor in enumerate(manifest.layers)
    )
