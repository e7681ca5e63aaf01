"""An image in the host's containers-storage (where `podman build` leaves it) is fetched and imported.

containers-storage keeps layers uncompressed, so skopeo's copy out of it compresses them again and the
manifest digest changes: that is not tampering, and the fetch must not refuse it.
"""

from __future__ import annotations

from pathlib import Path

from builder import run
from builder.source.fetch import fetch_image
from builder.source.image import LayerRole
from builder.source.reference import parse_reference

COMMIT = "3cb6170b6945065c2475bc16d7bebcc84f96b4c677811a6751e479b89f8c3770"
NAME = "localhost/imgbuild-test-exampleos:latest"


def test_fetch_from_containers_storage(ostree_ext_fixtures: Path, tmp_path: Path) -> None:
    archive = ostree_ext_fixtures / "exampleos-derive.ociarchive"
    run.run(["skopeo", "copy", "--quiet", f"oci-archive:{archive}", f"containers-storage:{NAME}"])
    try:
        image = fetch_image(parse_reference(f"containers-storage:{NAME}"), cache=tmp_path / "cache")
        assert image.ostree_commit == COMMIT
        assert [layer.role for layer in image.layers] == [LayerRole.OSTREE_COMMIT, LayerRole.DERIVED]
        # Fetched again: served from the cache under the same digest.
        again = fetch_image(parse_reference(f"containers-storage:{NAME}"), cache=tmp_path / "cache")
        assert again.manifest_digest == image.manifest_digest
    finally:
        run.run(["skopeo", "delete", f"containers-storage:{NAME}"], check=False)
