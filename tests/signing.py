"""Test inputs for signed images, made by the tests themselves: GPG keys, and signed, unsigned and tampered
ostree-native images of the example OS (from a copy of its commit, never from the shared repository)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder import run
from builder.example import ExampleImage
from builder.ostree.gi import Gio, GLib, OSTree
from tests.imagebuilds import imgbuild


@dataclass(frozen=True)
class Keys:
    home: Path  # GNUPGHOME holding both secret keys
    good: Path  # the trusted public key (binary)
    good_armored: Path
    other: Path  # another key's public key
    good_fpr: str
    other_fpr: str

    @property
    def env(self) -> dict[str, str]:
        return {"GNUPGHOME": str(self.home)}


def _gpg(keys_home: Path, *args: str) -> run.Completed:
    return run.run(
        ["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        env={"GNUPGHOME": str(keys_home)},
        timeout=120,
    )


def _fingerprint(home: Path, email: str) -> str:
    out = _gpg(home, "--with-colons", "--list-keys", email).out
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


@contextlib.contextmanager
def signing_keys(base: Path) -> Iterator[Keys]:
    """make_keys, and the gpg-agent gpg started for them stopped afterwards: no daemon outlives a test."""
    keys = make_keys(base)
    try:
        yield keys
    finally:
        run.run(["gpgconf", "--kill", "all"], env={"GNUPGHOME": str(keys.home)}, check=False)


def make_keys(base: Path) -> Keys:
    """Two signing keys without passphrase in a fresh GNUPGHOME under `base`."""
    home = base / "gnupg"
    home.mkdir(mode=0o700, parents=True)
    for who in ("good", "other"):
        _gpg(home, "--quick-gen-key", f"imgbuild {who} <{who}@test.invalid>", "ed25519", "sign", "never")
    good, other = _fingerprint(home, "good@test.invalid"), _fingerprint(home, "other@test.invalid")
    (base / "good.gpg").write_bytes(_gpg(home, "--export", good).stdout)
    (base / "good.asc").write_bytes(_gpg(home, "--armor", "--export", good).stdout)
    (base / "other.gpg").write_bytes(_gpg(home, "--export", other).stdout)
    return Keys(home, base / "good.gpg", base / "good.asc", base / "other.gpg", good, other)


@dataclass(frozen=True)
class SignedImages:
    repo: Path  # archive repository holding the signed commit (a copy of the example's)
    commit: str
    signed: Path  # oci-archive of the commit signed by the good key
    tampered: Path  # a changed commit carrying the signed commit's detached metadata
    tampered_commit: str


def _repo(path: Path) -> object:
    repo = OSTree.Repo.new(Gio.File.new_for_path(str(path)))
    repo.open(None)
    return repo


def make_signed_images(example: ExampleImage, keys: Keys, base: Path) -> SignedImages:
    repo = base / "repo"
    run.run(["ostree", "init", f"--repo={repo}", "--mode=archive"])
    run.run(["ostree", f"--repo={repo}", "pull-local", example.repo, example.ref])
    run.run(
        ["ostree", f"--repo={repo}", "gpg-sign", f"--gpg-homedir={keys.home}", example.ref, keys.good_fpr],
        env=keys.env,
    )
    signed = base / "signed.ociarchive"
    imgbuild(["encapsulate", "--repo", repo, example.ref, f"oci-archive:{signed}"])

    # The same tree plus one file, committed anew, with the signed commit's detached metadata copied over:
    # every digest of its image is right, but the signature is over the other commit.
    extra = base / "extra"
    (extra / "usr/share/imgbuild").mkdir(parents=True)
    (extra / "usr/share/imgbuild/tampered").write_text("changed after signing\n")
    tampered_ref = "tampered"
    run.run(
        [
            "ostree",
            f"--repo={repo}",
            "commit",
            "--no-bindings",
            f"--branch={tampered_ref}",
            f"--tree=ref={example.ref}",
            f"--tree=dir={extra}",
            "--subject=tampered",
            "--owner-uid=0",
            "--owner-gid=0",
        ]
    )
    ostree_repo = _repo(repo)
    _, tampered_commit = ostree_repo.resolve_rev(tampered_ref, False)  # type: ignore[attr-defined]
    _, example_commit = ostree_repo.resolve_rev(example.ref, False)  # type: ignore[attr-defined]
    _, detached = ostree_repo.read_commit_detached_metadata(example_commit, None)  # type: ignore[attr-defined]
    assert detached is not None and detached.lookup_value("ostree.gpgsigs", GLib.VariantType("aay"))
    ostree_repo.write_commit_detached_metadata(tampered_commit, detached, None)  # type: ignore[attr-defined]
    tampered = base / "tampered.ociarchive"
    imgbuild(["encapsulate", "--repo", repo, tampered_ref, f"oci-archive:{tampered}"])
    return SignedImages(repo, str(example_commit), signed, tampered, str(tampered_commit))


def one_error_line(stderr: bytes) -> str:
    """The error line of a refusal: exactly one `imgbuild: error:` line, no traceback."""
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("imgbuild: error:")]
    assert len(errors) == 1, text
    return errors[0]
