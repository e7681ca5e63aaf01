"""What the built system updates from: the deployment's origin (`container-image-reference=` in its
.origin file, as bootc writes it).

By default it is the reference the image was built from. An image read from this machine (oci:,
oci-archive:, docker-archive:, containers-storage:) would leave the booted system pointing at a path or a
store on the build host, so such a build warns unless `--target-imgref REF` (bootc-image-builder's name)
says where the system's updates come from. A source verified through an ostree remote or a signature
policy keeps that verification for its updates: the target is recorded in the same signed form.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from builder.source.reference import Reference, Signature, Transport, parse_reference


@dataclass(frozen=True)
class Origin:
    reference: str  # as the origin file records it
    warning: str | None = None  # why the booted system will not be able to update


def deployment_origin(source: Reference, target_imgref: str | None) -> Origin:
    if target_imgref is None:
        if source.transport is Transport.REGISTRY:
            return Origin(source.origin)
        return Origin(
            source.origin,
            f"{source} is read from this machine, so the booted system will not be able to update "
            "(its origin names this host's copy); pass --target-imgref REGISTRY/NAME:TAG, the image "
            "it should update from",
        )
    target = parse_reference(target_imgref)
    if target.signature is Signature.UNVERIFIED:
        if source.signature is Signature.OSTREE_REMOTE and source.remote is not None:
            target = target.with_remote(source.remote)
        elif source.signature is Signature.CONTAINER_POLICY:
            target = replace(target, signature=Signature.CONTAINER_POLICY)
    return Origin(target.origin)
