"""Ref escaping follows ostree-ext's rules, so bootc/rpm-ostree find the refs we write."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from builder.errors import ImportFailure
from builder.ostree.gi import OSTree
from builder.ostree.refescape import escape_ref, image_ref, layer_ref, unescape_ref


def test_registry_reference() -> None:
    # research §1.4's example, with the host name replaced.
    assert (
        escape_ref("docker://registry.invalid/fedora/fedora-coreos:stable")
        == "docker_3A__2F__2F_registry_2E_invalid/fedora/fedora-coreos_3A_stable"
    )


def test_layer_and_image_refs() -> None:
    digest = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
    assert layer_ref(digest) == f"ostree/container/blob/sha256_3A_{digest[7:]}"
    assert image_ref("oci:/srv/img:tag") == "ostree/container/image/oci_3A__2F_srv/img_3A_tag"


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a_b", "a__b"),
        ("a-b", "a-b"),
        ("/a", "_2F_a"),  # no slash at the start
        ("a/", "a_2F_"),  # nor at the end
        ("a//b", "a/_2F_b"),  # nor after a non-alphanumeric
        ("a./b", "a_2E__2F_b"),
        ("a/-b", "a/-b"),
        ("\x05", "_05_"),
        ("é", "_E9_"),
    ],
)
def test_rules(text: str, escaped: str) -> None:
    assert escape_ref(text) == escaped
    assert unescape_ref(escaped) == text


def test_empty_refused() -> None:
    with pytest.raises(ImportFailure):
        escape_ref("")


def test_bad_escape_refused() -> None:
    with pytest.raises(ImportFailure):
        unescape_ref("a_ZZ_")


@given(st.text(alphabet=st.characters(blacklist_characters="\0"), min_size=1, max_size=40))
def test_round_trip(text: str) -> None:
    escaped = escape_ref(text)
    assert unescape_ref(escaped) == text
    assert all(c.isascii() and (c.isalnum() or c in "_-/") for c in escaped)
    assert "//" not in escaped and not escaped.startswith("/") and not escaped.endswith("/")


# Image references as skopeo spells them (path components never start with "-" or ".").
IMGREFS = st.from_regex(
    r"(docker://|oci:/|oci-archive:/)[a-z0-9][a-z0-9._-]{0,10}(/[a-z0-9][a-z0-9._-]{0,10}){0,3}"
    r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,10})?",
    fullmatch=True,
)


@given(IMGREFS)
def test_image_refs_are_valid_ostree_refs(imgref: str) -> None:
    assert OSTree.validate_rev(image_ref(imgref))
