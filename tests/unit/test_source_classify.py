"""builder.source.classify against a real 51-layer chunked manifest (ostree-ext's manifest1.json)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from builder.errors import SourceError
from builder.source import oci
from builder.source.classify import build_layers, classify, history_for_layers
from builder.source.image import Compression, LayerRole, Layout

COMMIT = "3cb6170b6945065c2475bc16d7bebcc84f96b4c677811a6751e479b89f8c3770"


def _diff_ids(count: int) -> list[str]:
    return [f"sha256:{hashlib.sha256(str(i).encode()).hexdigest()}" for i in range(count)]


def _config(
    diff_ids: list[str], labels: dict[str, str], history: list[dict[str, object]] | None = None
) -> bytes:
    return json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history if history is not None else [],
        }
    ).encode()


@pytest.fixture
def manifest1(ostree_ext_fixtures: Path) -> oci.Manifest:
    return oci.parse_manifest((ostree_ext_fixtures / "manifest1.json").read_bytes())


def test_manifest1_chunked(manifest1: oci.Manifest) -> None:
    """layer 0 commit, chunks up to final-diffid, the two last layers derived (as if built FROM it)."""
    assert len(manifest1.layers) == 51
    diff_ids = _diff_ids(51)
    labels = {"ostree.commit": COMMIT, "ostree.final-diffid": diff_ids[48], "ostree.bootable": "true"}
    history: list[dict[str, object]] = [{"created_by": "ostree export"}]
    history += [{"created_by": f"chunk {i}"} for i in range(1, 49)]
    history += [
        {"created_by": "LABEL a=b", "empty_layer": True},
        {"created_by": "RUN x"},
        {"created_by": "COPY y"},
    ]
    config = oci.parse_config(_config(diff_ids, labels, history))
    result = classify(config.labels, config.diff_ids)
    assert result.layout is Layout.CHUNKED
    assert result.ostree_commit == COMMIT
    assert result.roles[0] is LayerRole.OSTREE_COMMIT
    assert result.roles[1:49] == (LayerRole.OSTREE_CHUNK,) * 48
    assert result.roles[49:] == (LayerRole.DERIVED,) * 2

    layers = build_layers(manifest1, config, result.roles, source="manifest1")
    assert [layer.index for layer in layers] == list(range(51))
    assert layers[0].digest == "sha256:75f4abe8518ec55cb8bf0d358a737084f38e2c030a28651d698c0b7569d680a6"
    assert layers[0].size == 1387849
    assert all(layer.compression is Compression.GZIP for layer in layers)
    assert layers[0].created_by == "ostree export"
    assert layers[48].created_by == "chunk 48"
    # The empty_layer entry is skipped, so the derived layers line up with RUN and COPY.
    assert (layers[49].created_by, layers[50].created_by) == ("RUN x", "COPY y")
    assert tuple(layer.diff_id for layer in layers) == tuple(diff_ids)


def test_single_chunk_final_diffid_is_layer0() -> None:
    diff_ids = _diff_ids(3)
    result = classify({"ostree.commit": COMMIT, "ostree.final-diffid": diff_ids[0]}, diff_ids)
    assert result.roles == (LayerRole.OSTREE_COMMIT, LayerRole.DERIVED, LayerRole.DERIVED)


def test_legacy_diffid() -> None:
    diff_ids = _diff_ids(5)
    result = classify({"ostree.commit": COMMIT, "ostree.diffid": diff_ids[2]}, diff_ids)
    assert result.layout is Layout.LEGACY
    assert result.roles == (
        LayerRole.OSTREE_CHUNK,
        LayerRole.OSTREE_CHUNK,
        LayerRole.OSTREE_COMMIT,
        LayerRole.DERIVED,
        LayerRole.DERIVED,
    )


def test_final_diffid_wins_over_legacy_label() -> None:
    diff_ids = _diff_ids(3)
    labels = {"ostree.final-diffid": diff_ids[1], "ostree.diffid": diff_ids[2], "ostree.commit": COMMIT}
    assert classify(labels, diff_ids).layout is Layout.CHUNKED


def test_legacy_unlabelled() -> None:
    diff_ids = _diff_ids(2)
    result = classify({"ostree.commit": COMMIT, "version": "42.0"}, diff_ids)
    assert result.layout is Layout.LEGACY_UNLABELLED
    assert result.roles == (LayerRole.OSTREE_COMMIT, LayerRole.DERIVED)


def test_bootc_without_ostree_labels() -> None:
    diff_ids = _diff_ids(4)
    result = classify({"containers.bootc": "1"}, diff_ids)
    assert result.layout is Layout.BOOTC
    assert result.ostree_commit is None
    assert result.roles == (LayerRole.DERIVED,) * 4


@pytest.mark.parametrize("label", ["ostree.final-diffid", "ostree.diffid"])
def test_label_naming_no_layer(label: str) -> None:
    with pytest.raises(SourceError, match=f"{label}=sha256:0+ names no layer"):
        classify({label: "sha256:" + "0" * 64, "ostree.commit": COMMIT}, _diff_ids(3), source="img")


def test_ostree_labels_without_layers() -> None:
    with pytest.raises(SourceError, match="no layers"):
        classify({"ostree.commit": COMMIT}, [])


def test_history_that_does_not_line_up_is_ignored(manifest1: oci.Manifest) -> None:
    diff_ids = _diff_ids(51)
    config = oci.parse_config(_config(diff_ids, {}, [{"created_by": "only one"}]))
    assert history_for_layers(config) is None
    layers = build_layers(manifest1, config, (LayerRole.DERIVED,) * 51, source="manifest1")
    assert all(layer.created_by is None for layer in layers)


def test_layer_count_mismatch(manifest1: oci.Manifest) -> None:
    config = oci.parse_config(_config(_diff_ids(50), {}))
    with pytest.raises(SourceError, match="51 layers but its config 50 diff_ids"):
        build_layers(manifest1, config, (LayerRole.DERIVED,) * 50, source="manifest1")


def test_annotations_are_kept() -> None:
    diff_ids = _diff_ids(1)
    manifest = oci.parse_manifest(
        json.dumps(
            {
                "schemaVersion": 2,
                "config": {"mediaType": "x", "digest": diff_ids[0], "size": 1},
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd",
                        "digest": diff_ids[0],
                        "size": 10,
                        "annotations": {"ostree.components": "bash,glibc"},
                    }
                ],
            }
        ).encode()
    )
    config = oci.parse_config(_config(diff_ids, {}))
    (layer,) = build_layers(manifest, config, (LayerRole.DERIVED,), source="x")
    assert layer.annotations == {"ostree.components": "bash,glibc"}
    assert layer.compression is Compression.ZSTD


@pytest.mark.parametrize(
    "document",
    [
        b"not json",
        b"[]",
        b'{"schemaVersion": 2, "layers": []}',
        b'{"schemaVersion": 2, "config": {"digest": "sha256:1", "size": 1}, "layers": []}',
        b'{"schemaVersion": 1, "config": {"digest": "sha256:' + b"0" * 64 + b'", "size": 1}, "layers": []}',
    ],
)
def test_malformed_manifests(document: bytes) -> None:
    with pytest.raises(SourceError, match="malformed manifest"):
        oci.parse_manifest(document)


def test_unknown_layer_media_type() -> None:
    with pytest.raises(SourceError, match="unsupported layer media type"):
        oci.compression_of("application/vnd.oci.image.layer.v1.tar+bzip2")
