"""A fetch into an empty cache reports the bytes skopeo writes: the last report is every blob the manifest
names; a second fetch copies nothing and reports nothing."""

from __future__ import annotations

import itertools
from pathlib import Path

from builder.example import ExampleImage
from builder.source import oci
from builder.source.fetch import fetch_image
from builder.source.reference import parse_reference


def test_fetch_reports_bytes(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    reports: list[tuple[int, int]] = []
    ref = parse_reference(example_x86_64.reference)
    image = fetch_image(ref, cache=tmp_path / "oci", on_bytes=lambda d, t: reports.append((d, t)))
    manifest = oci.parse_manifest(image.manifest)
    expected = len(image.manifest) + sum(d.size for d in (manifest.config, *manifest.layers))
    assert reports[0] == (0, expected)
    assert reports[-1] == (expected, expected)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(reports))

    again: list[tuple[int, int]] = []
    fetch_image(ref, cache=tmp_path / "oci", on_bytes=lambda d, t: again.append((d, t)))
    assert again == []
