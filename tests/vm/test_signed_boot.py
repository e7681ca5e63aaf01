"""A disk built from a signed ostree commit through `ostree-remote-image:`: it boots to the self-test marker,
its origin keeps the signed form, and the remote installed with --install-remote makes libostree verify that
commit (so the booted system's updates are verified the same way)."""

from __future__ import annotations

import re
from pathlib import Path

from builder import run
from builder.devices import loop_device, mounted
from builder.example import SELFTEST_MARKER
from builder.ostree.gi import Gio, OSTree
from tests.imagebuilds import ImageBuilds, imgbuild, partitions, raw_copy
from tests.signing import Keys, SignedImages


def _verify_with_installed_remote(conf: str, key: Path, signed: SignedImages, work: Path) -> str:
    """libostree's own verification of the signed commit, with the remote configuration from the image."""
    repo_path = work / "verify-repo"
    run.run(["ostree", "init", f"--repo={repo_path}", "--mode=archive"])
    # The image's gpgkeypath is a path inside the image: point it at the copy taken out of it.
    conf = re.sub(r"(?m)^gpgkeypath=.*$", f"gpgkeypath={key}", conf)
    with open(repo_path / "config", "a") as config:
        config.write("\n" + conf)
    source = OSTree.Repo.new(Gio.File.new_for_path(str(signed.repo)))
    source.open(None)
    _, commit = source.load_variant(OSTree.ObjectType.COMMIT, signed.commit)
    _, detached = source.read_commit_detached_metadata(signed.commit, None)
    repo = OSTree.Repo.new(Gio.File.new_for_path(str(repo_path)))
    repo.open(None)
    ok, results = repo.signature_verify_commit_data(
        "testremote", commit.get_data_as_bytes(), detached.get_data_as_bytes(), 0
    )
    assert ok
    return str(results)


def test_signed_image_boots_with_signed_origin(
    signed: SignedImages, keys: Keys, images: ImageBuilds, tmp_path: Path
) -> None:
    reference = f"ostree-remote-image:testremote:oci-archive:{signed.signed}"
    built = images.get("raw", reference, "--gpg-key", str(keys.good), "--install-remote")
    assert built.stage_options("container.import")["ostree_remote"]["name"] == "testremote"
    assert built.stage_options("ostree.deploy")["origin"] == reference

    with raw_copy(built.image, tmp_path) as raw:
        root = partitions(raw)[3]
        (tmp_path / "root").mkdir()
        with (
            loop_device(raw, offset=root.start, size=root.size, read_only=True) as dev,
            mounted(dev, tmp_path / "root", fstype="ext4", options=["ro"]) as mnt,
        ):
            deploy = mnt / "ostree/deploy/default/deploy" / f"{built.result['commit']}.0"
            origin = deploy.with_name(deploy.name + ".origin").read_text()
            conf = (deploy / "etc/ostree/remotes.d/testremote.conf").read_text()
            key = deploy / "etc/pki/ostree/testremote-0.gpg"
            assert key.read_bytes() == keys.good.read_bytes()
            (tmp_path / "key.gpg").write_bytes(key.read_bytes())
    assert f"container-image-reference={reference}\n" in origin
    assert conf.startswith('[remote "testremote"]\n') and "gpg-verify=true\n" in conf
    assert "gpgkeypath=/etc/pki/ostree/testremote-0.gpg\n" in conf
    assert keys.good_fpr[-16:] in _verify_with_installed_remote(conf, tmp_path / "key.gpg", signed, tmp_path)

    out = imgbuild(
        ["boot", built.image, "--firmware", "bios", "--timeout", "600", "--append", "imgbuild.selftest=1"]
    ).out
    line = next((x for x in out.splitlines() if SELFTEST_MARKER in x), None)
    assert line is not None, out[-3000:]
    assert f"commit={built.result['commit']}" in line
