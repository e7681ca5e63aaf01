"""builder.source.reference: the reference forms users write, and what skopeo and bootc get from them."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import BadReference
from builder.source.reference import Reference, Transport, parse_reference

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "skopeo", "origin", "shown"),
    [
        (
            "registry.invalid/fedora/silverblue:36",
            "docker://registry.invalid/fedora/silverblue:36",
            "ostree-unverified-registry:registry.invalid/fedora/silverblue:36",
            "registry.invalid/fedora/silverblue:36",
        ),
        (
            "docker://registry.invalid/fedora/silverblue:36",
            "docker://registry.invalid/fedora/silverblue:36",
            "ostree-unverified-registry:registry.invalid/fedora/silverblue:36",
            "registry.invalid/fedora/silverblue:36",
        ),
        (
            "registry.invalid/fedora/silverblue",
            "docker://registry.invalid/fedora/silverblue:latest",
            "ostree-unverified-registry:registry.invalid/fedora/silverblue:latest",
            "registry.invalid/fedora/silverblue:latest",
        ),
        (
            f"registry.invalid/a/b@{DIGEST}",
            f"docker://registry.invalid/a/b@{DIGEST}",
            f"ostree-unverified-registry:registry.invalid/a/b@{DIGEST}",
            f"registry.invalid/a/b@{DIGEST}",
        ),
        (
            f"registry.invalid:5000/a/b:36@{DIGEST}",
            f"docker://registry.invalid:5000/a/b@{DIGEST}",
            f"ostree-unverified-registry:registry.invalid:5000/a/b@{DIGEST}",
            f"registry.invalid:5000/a/b@{DIGEST}",
        ),
        (
            "127.0.0.1:5000/os:1",
            "docker://127.0.0.1:5000/os:1",
            "ostree-unverified-registry:127.0.0.1:5000/os:1",
            "127.0.0.1:5000/os:1",
        ),
        (
            "localhost/os:1",
            "docker://localhost/os:1",
            "ostree-unverified-registry:localhost/os:1",
            "localhost/os:1",
        ),
        (
            "oci:/srv/images/os:v1",
            "oci:/srv/images/os:v1",
            "ostree-unverified-image:oci:/srv/images/os:v1",
            "oci:/srv/images/os:v1",
        ),
        (
            "oci-archive:/srv/os.ociarchive",
            "oci-archive:/srv/os.ociarchive",
            "ostree-unverified-image:oci-archive:/srv/os.ociarchive",
            "oci-archive:/srv/os.ociarchive",
        ),
        (
            "docker-archive:/srv/os.tar",
            "docker-archive:/srv/os.tar",
            "ostree-unverified-image:docker-archive:/srv/os.tar",
            "docker-archive:/srv/os.tar",
        ),
        (
            "containers-storage:localhost/os:1",
            "containers-storage:localhost/os:1",
            "ostree-unverified-image:containers-storage:localhost/os:1",
            "containers-storage:localhost/os:1",
        ),
        # The origin forms read back to the same reference.
        (
            "ostree-unverified-registry:registry.invalid/fedora/silverblue:36",
            "docker://registry.invalid/fedora/silverblue:36",
            "ostree-unverified-registry:registry.invalid/fedora/silverblue:36",
            "registry.invalid/fedora/silverblue:36",
        ),
        (
            "ostree-unverified-image:oci:/srv/images/os",
            "oci:/srv/images/os",
            "ostree-unverified-image:oci:/srv/images/os",
            "oci:/srv/images/os",
        ),
    ],
)
def test_forms(text: str, skopeo: str, origin: str, shown: str) -> None:
    ref = parse_reference(text)
    assert ref.skopeo == skopeo
    assert ref.origin == origin
    assert str(ref) == shown
    again = parse_reference(ref.origin)
    assert (again.skopeo, again.origin, str(again)) == (skopeo, origin, shown)


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ref = parse_reference("oci-archive:images/os.ociarchive:stable")
    assert ref.transport is Transport.OCI_ARCHIVE
    assert ref.name == str(tmp_path.resolve() / "images" / "os.ociarchive")
    assert ref.tag == "stable"
    assert ref.skopeo == f"oci-archive:{tmp_path.resolve()}/images/os.ociarchive:stable"
    assert Path(parse_reference("oci:dir").name).is_absolute()


def test_fields_and_frozen() -> None:
    ref = parse_reference("registry.invalid/fedora/silverblue:36")
    assert ref == Reference(Transport.REGISTRY, "registry.invalid/fedora/silverblue", "36", None)
    with pytest.raises(AttributeError):
        ref.tag = "37"  # type: ignore[misc]
    assert ref.pinned(DIGEST).skopeo == f"docker://registry.invalid/fedora/silverblue@{DIGEST}"
    assert hash(ref) == hash(parse_reference("docker://registry.invalid/fedora/silverblue:36"))


@pytest.mark.parametrize(
    ("text", "in_message"),
    [
        ("", "empty"),
        ("fedora/silverblue:36", "not a registry host"),
        ("silverblue", "registry host"),
        ("registry.invalid/Fedora/silverblue:36", "not a valid"),
        ("registry.invalid/fedora/silverblue:bad tag", "white space"),
        ("registry.invalid/a/b@sha256:1234", "not a valid"),
        ("registry.invalid/a/b@md5:" + "0" * 32, "not a valid"),
        ("registry.invalid/a/b:" + "t" * 129, "not a valid"),
        ("oci:", "needs a path"),
        ("oci-archive::tag", "needs a path"),
        ("oci:/srv/x:", "empty tag"),
        ("oci:/srv/x:bad/tag", "not a valid tag"),
        ("dir:/srv/x", "not supported"),
        ("ostree:ref", "not supported"),
        ("docker:registry.invalid/a", "docker://"),
        ("containers-storage:", "needs an image"),
        ("ostree-remote-image:fedora", "needs a remote name and an image"),
        ("ostree-remote-image::oci:/x", "needs a remote name and an image"),
        ("ostree-remote-image:a/b:oci:/x", "not a valid ostree remote name"),
    ],
)
def test_bad_references(text: str, in_message: str) -> None:
    with pytest.raises(BadReference) as info:
        parse_reference(text)
    assert in_message in info.value.message
    assert info.value.hint
    assert info.value.exit_code == 2
    assert "\n" not in info.value.message


@pytest.mark.parametrize(
    ("text", "skopeo", "origin", "remote"),
    [
        (
            "ostree-remote-image:fedora:docker://registry.invalid/a/b:36",
            "docker://registry.invalid/a/b:36",
            "ostree-remote-image:fedora:docker://registry.invalid/a/b:36",
            "fedora",
        ),
        (
            "ostree-remote-image:fedora:registry:registry.invalid/a/b:36",
            "docker://registry.invalid/a/b:36",
            "ostree-remote-image:fedora:docker://registry.invalid/a/b:36",
            "fedora",
        ),
        (
            "ostree-remote-registry:fedora:registry.invalid/a/b",
            "docker://registry.invalid/a/b:latest",
            "ostree-remote-image:fedora:docker://registry.invalid/a/b:latest",
            "fedora",
        ),
        (
            "ostree-remote-image:test.remote:oci-archive:/srv/x.ociarchive",
            "oci-archive:/srv/x.ociarchive",
            "ostree-remote-image:test.remote:oci-archive:/srv/x.ociarchive",
            "test.remote",
        ),
        (
            "ostree-image-signed:docker://registry.invalid/a/b:36",
            "docker://registry.invalid/a/b:36",
            "ostree-image-signed:docker://registry.invalid/a/b:36",
            None,
        ),
    ],
)
def test_signed_forms(text: str, skopeo: str, origin: str, remote: str | None) -> None:
    """The ostree-ext spellings of a verified reference; the origin keeps the signed form and parses back."""
    ref = parse_reference(text)
    assert (ref.skopeo, ref.origin, ref.remote) == (skopeo, origin, remote)
    assert parse_reference(ref.origin) == ref


def test_with_remote_upgrades_the_origin() -> None:
    ref = parse_reference("oci-archive:/srv/x.ociarchive").with_remote("testremote")
    assert ref.origin == "ostree-remote-image:testremote:oci-archive:/srv/x.ociarchive"
    with pytest.raises(BadReference):
        parse_reference("oci:/srv/x").with_remote("a b")
