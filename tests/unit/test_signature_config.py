"""Where verification settings come from: ostree remotes.d files, key files, the containers policy's scopes,
and their round trip through the manifest."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from builder.ostree.remotes import RemoteError, find_remote, from_key_files, image_config, install_files
from builder.ostree.signature import dearmor
from builder.source.policy import Policy
from builder.source.reference import parse_reference
from builder.source.trust import Trust


def _conf(root: Path, text: str) -> None:
    (root / "etc/ostree/remotes.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/ostree/remotes.d/a.conf").write_text(text)


def test_remote_from_remotes_d(tmp_path: Path) -> None:
    (tmp_path / "etc/pki/keys").mkdir(parents=True)
    (tmp_path / "etc/pki/one.gpg").write_bytes(b"1")
    (tmp_path / "etc/pki/keys/b.asc").write_bytes(b"3")
    (tmp_path / "etc/pki/keys/a.gpg").write_bytes(b"2")
    (tmp_path / "ostree/repo").mkdir(parents=True)
    (tmp_path / "ostree/repo/myos.trustedkeys.gpg").write_bytes(b"4")
    _conf(
        tmp_path,
        '[remote "other"]\nurl=x\n\n[remote "myos"]\nurl=https://os.invalid\ngpgkeypath=/etc/pki/one.gpg;/etc/pki/keys\n',
    )
    remote = find_remote("myos", tmp_path)
    assert [p.read_bytes() for p in remote.gpg_keys] == [b"1", b"2", b"3", b"4"]
    assert remote.gpg_verify and not remote.ed25519 and remote.url == "https://os.invalid"
    assert remote.source == str(tmp_path / "etc/ostree/remotes.d/a.conf")


@pytest.mark.parametrize(
    ("text", "gpg", "ed25519"),
    [
        ('[remote "myos"]\nurl=x\ngpg-verify=false\n', False, False),
        ('[remote "myos"]\nurl=x\nsign-verify=ed25519\n', True, True),
        ('[remote "myos"]\nurl=x\nverification-ed25519-file=/k\n', True, True),
    ],
)
def test_remote_verification_kinds(tmp_path: Path, text: str, gpg: bool, ed25519: bool) -> None:
    _conf(tmp_path, text)
    remote = find_remote("myos", tmp_path)
    assert (remote.gpg_verify, remote.ed25519) == (gpg, ed25519)


def test_remote_errors(tmp_path: Path) -> None:
    with pytest.raises(RemoteError, match="no ostree remote 'myos' is configured"):
        find_remote("myos", tmp_path)
    _conf(tmp_path, '[remote "myos"]\nurl=x\ngpgkeypath=/missing.gpg\n')
    with pytest.raises(RemoteError, match=r"gpgkeypath /missing\.gpg does not exist"):
        find_remote("myos", tmp_path)
    _conf(tmp_path, "not a key file [")
    with pytest.raises(RemoteError, match="cannot read"):
        find_remote("myos", tmp_path)
    with pytest.raises(RemoteError, match="needs its keys"):
        from_key_files("myos", ())
    with pytest.raises(RemoteError, match="does not exist"):
        from_key_files("myos", (tmp_path / "nope.gpg",))
    with pytest.raises(RemoteError, match="not a valid ostree remote name"):
        find_remote("a/b", tmp_path)


def test_image_config_and_install(tmp_path: Path) -> None:
    (tmp_path / "k.gpg").write_bytes(b"key")
    remote = from_key_files("myos", (tmp_path / "k.gpg",))
    assert image_config(remote) == (
        '[remote "myos"]\nurl=\ngpg-verify=true\ngpgkeypath=/etc/pki/ostree/myos-0.gpg\n'
    )
    options = Trust(remote=remote, install_remote=True).deploy_options()["install_remote"]
    files = {path: base64.b64decode(data) for path, data in options["files"].items()}
    etc = tmp_path / "etc"
    install_files(etc, files)
    assert (etc / "pki/ostree/myos-0.gpg").read_bytes() == b"key"
    assert (etc / "ostree/remotes.d/myos.conf").read_text() == image_config(remote)
    assert not list(etc.rglob(".*partial"))
    with pytest.raises(ValueError):
        install_files(etc, {"/etc/../x": b""})


def test_trust_round_trips_through_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "k.gpg").write_bytes(b"key")
    trust = Trust(
        Policy(tmp_path / "p.json", tmp_path / "r.d"), from_key_files("myos", (tmp_path / "k.gpg",))
    )
    options = json.loads(json.dumps(trust.import_options()))
    assert Trust.from_import_options(options) == trust
    assert Trust().import_options() == {} and Trust().deploy_options() == {}


def test_dearmor() -> None:
    packets = bytes(range(256)) * 3
    body = base64.b64encode(packets).decode()
    armored = (
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\nVersion: test\n\n"
        + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        + "\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n"
    )
    assert dearmor(armored.encode()) == packets
    assert dearmor(packets) == packets


def _policy(tmp_path: Path, document: object) -> Policy:
    (tmp_path / "policy.json").write_text(json.dumps(document))
    return Policy(tmp_path / "policy.json")


def test_policy_scopes(tmp_path: Path) -> None:
    signed = {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}
    policy = _policy(
        tmp_path,
        {
            "default": [{"type": "reject"}],
            "transports": {
                "docker": {
                    "registry.invalid/os": [signed],
                    "registry.invalid/os:open": [{"type": "insecureAcceptAnything"}],
                    "registry.invalid": [{"type": "sigstoreSigned", "keyPath": "/c.pub"}],
                },
                "oci-archive": {"": [{"type": "insecureAcceptAnything"}]},
            },
        },
    )
    assert policy.describe(parse_reference("registry.invalid/os:1")) == (
        f"containers policy {tmp_path}/policy.json (docker registry.invalid/os): signedBy GPGKeys /k.gpg"
    )
    assert not policy.requires_signature(parse_reference("registry.invalid/os:open"))
    assert policy.requirements(parse_reference("registry.invalid/other/x:1")) == (
        "docker registry.invalid",
        [{"type": "sigstoreSigned", "keyPath": "/c.pub"}],
    )
    assert policy.requirements(parse_reference("elsewhere.invalid/x:1")) == ("default", [{"type": "reject"}])
    assert not policy.requires_signature(parse_reference("oci-archive:/x.ociarchive"))
    assert not policy.accepts_anything()
    assert _policy(tmp_path, {"default": [{"type": "insecureAcceptAnything"}]}).accepts_anything()


def test_policy_missing_files(tmp_path: Path) -> None:
    from builder.errors import SourceError

    with pytest.raises(SourceError, match="does not exist"):
        Policy(tmp_path / "nope.json").check_paths()
    with pytest.raises(SourceError, match=r"registries\.d"):
        Policy(None, tmp_path / "nope.d").check_paths()
