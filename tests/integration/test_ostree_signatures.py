"""ostree commit signatures, verified against an ostree remote's keys before anything is imported: the example
OS's commit signed with a test key (in a copy of its repository), encapsulated; the unsigned example; and a
changed commit carrying the signed one's detached metadata (every digest right, the signature wrong)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.example import ExampleImage
from builder.ostree.gi import Gio, GLib, OSTree
from tests.imagebuilds import imgbuild
from tests.signing import Keys, SignedImages, one_error_line


def _remote_ref(archive: Path) -> str:
    return f"ostree-remote-image:testremote:oci-archive:{archive}"


def _import(ref: str, repo: Path, tmp_path: Path, *extra: str | Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return imgbuild(
        ["import", ref, "--repo", repo, *extra],
        env={"IMGBUILD_CACHE": str(tmp_path / "cache"), **(env or {})},
        check=False,
    )


def test_signed_commit_imports_with_its_signature(signed: SignedImages, keys: Keys, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    # An ASCII-armoured key works as well as a binary one.
    result = _import(_remote_ref(signed.signed), repo, tmp_path, "--gpg-key", keys.good_armored)
    assert result.returncode == 0, result.stderr.decode()
    assert f"GPG signature by {keys.good_fpr}" in result.stderr.decode()
    # The importer kept the detached metadata, and libostree itself verifies it with the key.
    ostree_repo = OSTree.Repo.new(Gio.File.new_for_path(str(repo)))
    ostree_repo.open(None)
    _, detached = ostree_repo.read_commit_detached_metadata(signed.commit, None)
    assert detached is not None and detached.lookup_value("ostree.gpgsigs", GLib.VariantType("aay"))
    verified = ostree_repo.verify_commit_ext(signed.commit, None, Gio.File.new_for_path(str(keys.good)), None)
    assert verified.count_valid() == 1


@pytest.mark.parametrize(
    ("which", "key", "reason"),
    [
        (
            "signed",
            "other",
            "it is signed by key {good}, which is not a key of ostree remote testremote (it trusts {other})",
        ),
        (
            "unsigned",
            "good",
            "is not signed (no GPG signature in its detached metadata); ostree remote "
            "testremote trusts key {good}",
        ),
        ("tampered", "good", "the signature by key {good} does not match the commit (changed after signing)"),
    ],
)
def test_refused_with_one_line_and_nothing_imported(
    which: str,
    key: str,
    reason: str,
    signed: SignedImages,
    example_x86_64: ExampleImage,
    keys: Keys,
    tmp_path: Path,
) -> None:
    archive = {"signed": signed.signed, "unsigned": example_x86_64.path, "tampered": signed.tampered}[which]
    key_file = keys.good if key == "good" else keys.other
    repo = tmp_path / "repo"
    result = _import(_remote_ref(archive), repo, tmp_path, "--gpg-key", key_file)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert line.startswith(f"imgbuild: error: {_remote_ref(archive)}: commit ")
    assert reason.format(good=keys.good_fpr, other=keys.other_fpr) in line
    assert not repo.exists()


def test_disk_build_refused_before_anything_is_written(
    signed: SignedImages, keys: Keys, builder_tmp: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    cache = tmp_path / "cache"
    result = imgbuild(
        ["raw", _remote_ref(signed.tampered), "--gpg-key", keys.good, "--output", output],
        env={"IMGBUILD_CACHE": str(cache)},
        check=False,
    )
    assert result.returncode == 2
    assert "changed after signing" in one_error_line(result.stderr)
    assert not output.exists()
    assert not (cache / "repo").exists(), "nothing imported"


def _remotes_d(root: Path, conf: str, key: Path | None = None) -> dict[str, str]:
    (root / "etc/ostree/remotes.d").mkdir(parents=True)
    (root / "etc/ostree/remotes.d/testremote.conf").write_text(conf)
    if key is not None:
        (root / "etc/pki/test").mkdir(parents=True)
        (root / "etc/pki/test/key.gpg").write_bytes(key.read_bytes())
    return {"IMGBUILD_OSTREE_ROOT": str(root)}


def test_remote_from_remotes_d(signed: SignedImages, keys: Keys, tmp_path: Path) -> None:
    """The remote's keys from ROOT/etc/ostree/remotes.d/NAME.conf (gpgkeypath read under ROOT)."""
    conf = '[remote "testremote"]\nurl=https://ostree.invalid/repo\ngpg-verify=true\ngpgkeypath=/etc/pki/test/key.gpg\n'
    good = _remotes_d(tmp_path / "good", conf, keys.good)
    ok = _import(_remote_ref(signed.signed), tmp_path / "r1", tmp_path, env=good)
    assert ok.returncode == 0, ok.stderr.decode()
    assert f"(imgbuild good <good@test.invalid>), a key of ostree remote testremote ({tmp_path}/good/etc" in (
        ok.stderr.decode()
    )
    # A plain reference with --ostree-remote is verified the same way.
    plain = _import(
        f"oci-archive:{signed.signed}", tmp_path / "r2", tmp_path, "--ostree-remote", "testremote", env=good
    )
    assert plain.returncode == 0, plain.stderr.decode()

    other = _remotes_d(tmp_path / "other", conf, keys.other)
    refused = _import(_remote_ref(signed.signed), tmp_path / "r3", tmp_path, env=other)
    assert refused.returncode == 2 and "not a key of ostree remote" in one_error_line(refused.stderr)

    for name, text, reason in (
        ("off", '[remote "testremote"]\nurl=x\ngpg-verify=false\n', "verifies nothing (gpg-verify=false)"),
        (
            "ed",
            '[remote "testremote"]\nurl=x\nsign-verify=true\nverification-ed25519-key=AAAA\n',
            "asks for ed25519 signatures, which this libostree (2022.7) cannot verify",
        ),
        ("none", '[remote "elsewhere"]\nurl=x\n', "no ostree remote 'testremote' is configured"),
    ):
        env = _remotes_d(tmp_path / name, text)
        result = _import(_remote_ref(signed.signed), tmp_path / f"r-{name}", tmp_path, env=env)
        assert result.returncode == 2 and reason in one_error_line(result.stderr), result.stderr.decode()
        assert not (tmp_path / f"r-{name}").exists()


def test_inspect_shows_what_verified(signed: SignedImages, keys: Keys, tmp_path: Path) -> None:
    result = imgbuild(
        [
            "inspect",
            _remote_ref(signed.signed),
            "--gpg-key",
            keys.good,
            "--cache",
            tmp_path / "cache",
            "--json",
        ]
    )
    summary = json.loads(result.out)
    assert summary["origin"] == _remote_ref(signed.signed)
    assert summary["verified"] == [
        f"ostree commit {signed.commit[:12]}: GPG signature by {keys.good_fpr} "
        f"(imgbuild good <good@test.invalid>), a key of ostree remote testremote (--gpg-key)"
    ]


def test_build_from_manifest_verifies_as_planned(
    signed: SignedImages, keys: Keys, builder_tmp: Path, tmp_path: Path
) -> None:
    """The verification settings are in the manifest: a manifest whose key was swapped is refused by build."""
    env = {"IMGBUILD_CACHE": str(tmp_path / "cache")}
    manifest = tmp_path / "plan.json"
    imgbuild(["plan", "raw", _remote_ref(signed.signed), "--gpg-key", keys.good, "-o", manifest], env=env)
    document = json.loads(manifest.read_text())
    stage = document["pipelines"][0]["stages"][0]
    assert stage["type"] == "container.import"
    assert stage["options"]["ostree_remote"]["gpg_keys"] == [str(keys.good)]
    stage["options"]["ostree_remote"]["gpg_keys"] = [str(keys.other)]
    manifest.write_text(json.dumps(document))
    output = tmp_path / "out"
    result = imgbuild(["build", manifest, "--output", output], env=env, check=False)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "container.import" in line and "which is not a key of ostree remote testremote" in line
    assert not output.exists() or not any(p.suffix == ".raw" for p in output.iterdir())
