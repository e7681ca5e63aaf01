"""The containers signature policy on imgbuild's fetches, against the loopback registry of
test_source_registry: images signed with skopeo's simple signing (`copy --sign-by`, signatures in a
registries.d lookaside directory), and a policy that requires the test key for that registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.source.fetch import fetch_image
from builder.source.policy import Policy
from builder.source.reference import parse_reference
from builder.source.skopeo import PolicyRefused
from tests.imagebuilds import imgbuild
from tests.integration.test_source_registry import Registry, _start, push
from tests.signing import Keys, one_error_line


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    (tmp_path / "registry").mkdir()
    started = _start(tmp_path / "registry")
    try:
        yield started
    finally:
        started.stop()


def _registries_d(base: Path) -> Path:
    """A registries.d whose lookaside (where simple signing keeps signatures) is a local directory."""
    directory = base / "registries.d"
    directory.mkdir()
    sigs = base / "signatures"
    sigs.mkdir()
    (directory / "default.yaml").write_text(
        f"default-docker:\n  lookaside: file://{sigs}\n  lookaside-staging: file://{sigs}\n"
    )
    return directory


def _policy(base: Path, registry: Registry, key: Path) -> Path:
    path = base / "policy.json"
    requirement = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(key)}
    path.write_text(
        json.dumps(
            {"default": [{"type": "reject"}], "transports": {"docker": {registry.host: [requirement]}}}
        )
    )
    return path


def _permissive(base: Path) -> Path:
    path = base / "permissive.json"
    path.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    return path


def test_signed_by_policy(ostree_ext_fixtures: Path, registry: Registry, keys: Keys, tmp_path: Path) -> None:
    regd = _registries_d(tmp_path)
    source = f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive.ociarchive'}"
    sign = ["--registries.d", str(regd)]
    # skopeo's global options go before the verb: push() takes copy options only, so sign by hand here.
    push(source, registry, "unsigned:1")
    from builder import run

    for name, fpr in (("signed:1", keys.good_fpr), ("otherkey:1", keys.other_fpr)):
        run.run(
            [
                "skopeo",
                *sign,
                "copy",
                "-q",
                "--dest-tls-verify=false",
                "--sign-by",
                fpr,
                source,
                f"docker://{registry.host}/{name}",
            ],
            env=keys.env,
        )
    strict = Policy(_policy(tmp_path, registry, keys.good), regd)
    cache = tmp_path / "cache"

    # Accepted, and said so.
    image = fetch_image(
        parse_reference(f"{registry.host}/signed:1"), cache=cache, tls_verify=False, policy=strict
    )
    assert image.verified == (
        f"containers policy {strict.path} (docker {registry.host}): signedBy GPGKeys {keys.good}: "
        "accepted by skopeo",
    )
    # Unsigned and signed by another key: refused, before any layer is read.
    for name, reason in (
        ("unsigned:1", "A signature was required, but no signature exists"),
        ("otherkey:1", "Invalid GPG signature"),
    ):
        gets = len(registry.blob_gets())
        with pytest.raises(PolicyRefused) as info:
            fetch_image(
                parse_reference(f"{registry.host}/{name}"), cache=cache, tls_verify=False, policy=strict
            )
        assert info.value.message.startswith(
            f"ostree-unverified-registry:{registry.host}/{name}: refused by the containers signature policy "
        )
        assert reason in info.value.message and "\n" not in info.value.message
        assert len(registry.blob_gets()) == gets

    # A cached image is no way around the policy: cached under a permissive policy, refused under the strict.
    unsigned = parse_reference(f"{registry.host}/unsigned:1")
    fetch_image(unsigned, cache=cache, tls_verify=False, policy=Policy(_permissive(tmp_path)))
    with pytest.raises(PolicyRefused):
        fetch_image(unsigned, cache=cache, tls_verify=False, policy=strict)
    pinned = unsigned.pinned(image.manifest_digest)  # same content as signed:1, but its own repository
    with pytest.raises(PolicyRefused):
        fetch_image(pinned, cache=cache, tls_verify=False, policy=strict)

    # ostree-image-signed: insists that the policy requires a signature.
    signed_form = f"ostree-image-signed:docker://{registry.host}/signed:1"
    assert fetch_image(parse_reference(signed_form), cache=cache, tls_verify=False, policy=strict).verified
    with pytest.raises(PolicyRefused, match=r"accepts .* unsigned"):
        fetch_image(
            parse_reference(signed_form), cache=cache, tls_verify=False, policy=Policy(_permissive(tmp_path))
        )


def test_policy_refusal_on_the_command_line(
    ostree_ext_fixtures: Path, registry: Registry, keys: Keys, tmp_path: Path
) -> None:
    regd = _registries_d(tmp_path)
    push(f"oci-archive:{ostree_ext_fixtures / 'exampleos-derive.ociarchive'}", registry, "unsigned:1")
    policy = _policy(tmp_path, registry, keys.good)
    common: list[str | Path] = [
        "--tls-verify",
        "false",
        "--cache",
        tmp_path / "cache",
        "--policy",
        policy,
        "--registries-d",
        regd,
    ]
    result = imgbuild(["inspect", f"{registry.host}/unsigned:1", *common], check=False)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "refused by the containers signature policy" in line and "no signature exists" in line
    missing = imgbuild(
        ["inspect", f"{registry.host}/unsigned:1", "--policy", tmp_path / "nope.json"], check=False
    )
    assert missing.returncode == 2 and "does not exist" in one_error_line(missing.stderr)
