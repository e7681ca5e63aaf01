"""Verify an ostree commit's signatures against an ostree remote's keys, before anything is imported.

The signatures travel in the commit's detached metadata (`.commitmeta`, key `ostree.gpgsigs`: each an OpenPGP
detached signature over the commit object's bytes), right after the commit object at the start of the image's
commit layer (research/ostree.md §1.3). Both are read from the head of that layer: the commit object is
authenticated by the signature and by the image's `ostree.commit` label (its sha256), and every object the
import writes later is checked by libostree against the checksums the commit reaches.

libostree does the GPG verification (`OstreeRepo.gpg_verify_data`), with a keyring directory holding only
the remote's keys: an empty global keyring, so no other trusted key counts.

ed25519 (`ostree.sign.ed25519`): Debian's libostree 2022.7 is built without it (`OSTree.Sign.get_by_name
("ed25519")` fails with "Requested signature type is not implemented"), so a remote that asks for ed25519
is refused with that reason rather than accepted unverified.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from builder import run
from builder.errors import CommandFailed, VerificationError
from builder.ostree.gi import Gio, GLib, OSTree
from builder.ostree.remotes import OstreeRemote
from builder.ostree.tarimport import REPO_PREFIX
from builder.source.image import Image, LayerRole, Layout
from builder.source.verify import open_layer_head

GPGSIGS_KEY = "ostree.gpgsigs"
ED25519_KEY = "ostree.sign.ed25519"
MAX_HEAD_OBJECT = 16 * 1024 * 1024  # a commit or its detached metadata; real ones are kilobytes
_HINT = "only build images whose ostree commit is signed by a key of that remote"


class SignatureError(VerificationError):
    """The image's ostree commit is not signed by a key of the ostree remote."""


@dataclass(frozen=True)
class SignatureCheck:
    """What was verified, and by what."""

    commit: str
    remote: str
    fingerprint: str  # of the key that made the valid signature
    user: str  # its user id
    keys_from: str  # where the remote's keys came from

    def describe(self) -> str:
        return (
            f"ostree commit {self.commit[:12]}: GPG signature by {self.fingerprint} ({self.user}), "
            f"a key of ostree remote {self.remote} ({self.keys_from})"
        )


@dataclass(frozen=True)
class CommitHead:
    commit: str
    commit_bytes: bytes
    detached: bytes | None  # the .commitmeta object: a{sv}


def read_commit_head(stream: IO[bytes]) -> CommitHead | None:
    """The commit object and its detached metadata from the start of a commit layer's tar stream."""
    commit: str | None = None
    commit_bytes = b""
    with tarfile.open(fileobj=stream, mode="r|") as tf:
        for member in tf:
            name = member.name.removeprefix("./")
            if not member.isreg() or not name.startswith(REPO_PREFIX + "objects/"):
                continue
            parts = name[len(REPO_PREFIX) :].split("/")
            if len(parts) != 3:
                continue
            stem, _, suffix = parts[2].partition(".")
            checksum = parts[1] + stem
            if member.size > MAX_HEAD_OBJECT:
                return None
            if suffix == "commit" and commit is None:
                commit, commit_bytes = checksum, _read(tf, member)
            elif suffix == "commitmeta" and checksum == commit:
                return CommitHead(commit, commit_bytes, _read(tf, member))
            elif commit is not None:
                return CommitHead(commit, commit_bytes, None)  # the first object after it: none
    return CommitHead(commit, commit_bytes, None) if commit is not None else None


def _read(tf: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    f = tf.extractfile(member)
    return f.read() if f is not None else b""


def dearmor(data: bytes) -> bytes:
    """OpenPGP binary packets from a key file, ASCII-armoured or not (libostree's keyrings are binary)."""
    if b"-----BEGIN PGP" not in data:
        return data
    out = b""
    for block in data.split(b"-----BEGIN PGP")[1:]:
        lines = block.split(b"\n")[1:]
        while lines and b":" in lines[0]:  # armour headers (Version: ...)
            lines.pop(0)
        body = []
        for line in lines:
            line = line.strip()
            if line.startswith((b"=", b"-----END")):
                break
            body.append(line)
        try:
            out += base64.b64decode(b"".join(body))
        except binascii.Error:
            continue
    return out


@contextmanager
def _keyring_dir(remote: OstreeRemote) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="imgbuild-keys-") as tmp:
        for i, key in enumerate(remote.gpg_keys):
            (Path(tmp) / f"key{i}.gpg").write_bytes(dearmor(key.read_bytes()))
        yield Path(tmp)


def key_fingerprints(remote: OstreeRemote) -> list[str]:
    """The fingerprints of the remote's keys (for messages), as gpg reads them."""
    fingerprints: list[str] = []
    with tempfile.TemporaryDirectory(prefix="imgbuild-gpg-") as home:
        for key in remote.gpg_keys:
            try:
                out = run.run(
                    ["gpg", "--homedir", home, "--batch", "--with-colons", "--show-keys", key], timeout=30
                ).out
            except CommandFailed:
                continue
            # The first fpr line after each pub line is the primary key's.
            primary = False
            for line in out.splitlines():
                fields = line.split(":")
                if fields[0] == "pub":
                    primary = True
                elif fields[0] == "fpr" and primary:
                    fingerprints.append(fields[9])
                    primary = False
    return fingerprints


def _signatures(detached: Any) -> bytes:
    sigs = detached.lookup_value(GPGSIGS_KEY, GLib.VariantType.new("aay"))
    if sigs is None:
        return b""
    # gpg_verify_data takes the detached signatures one after the other, as libostree concatenates them.
    return b"".join(
        bytes(sigs.get_child_value(i).get_data_as_bytes().get_data()) for i in range(sigs.n_children())
    )


def _ed25519_available() -> bool:
    try:
        OSTree.Sign.get_by_name("ed25519")
    except GLib.Error:
        return False
    return True


def verify_commit(
    head: CommitHead, remote: OstreeRemote, *, reference: str, expected: str | None
) -> SignatureCheck:
    """SignatureError (one line: reference, key, reason) unless a signature by a remote key covers it."""

    def refuse(reason: str) -> SignatureError:
        return SignatureError(f"{reference}: {reason}", hint=_HINT)

    actual = hashlib.sha256(head.commit_bytes).hexdigest()
    if actual != head.commit or (expected is not None and actual != expected):
        raise refuse(f"its commit object hashes to {actual}, not to the commit {expected or head.commit}")
    if remote.ed25519 and not _ed25519_available():
        raise refuse(
            f"ostree remote {remote.name} asks for ed25519 signatures, which this libostree "
            f"({OSTree.YEAR_VERSION}.{OSTree.RELEASE_VERSION}) cannot verify"
        )
    if not remote.gpg_verify:
        raise refuse(f"ostree remote {remote.name} ({remote.source}) verifies nothing (gpg-verify=false)")
    fingerprints = key_fingerprints(remote)
    trusted = ", ".join(fingerprints) or ", ".join(str(k) for k in remote.gpg_keys)
    if not remote.gpg_keys:
        raise refuse(f"ostree remote {remote.name} ({remote.source}) has no GPG keys")
    detached = None
    if head.detached is not None:
        detached = GLib.Variant.new_from_bytes(
            GLib.VariantType.new("a{sv}"), GLib.Bytes.new(head.detached), False
        ).get_normal_form()
    signatures = _signatures(detached) if detached is not None else b""
    if not signatures:
        raise refuse(
            f"commit {head.commit} is not signed (no GPG signature in its detached metadata); "
            f"ostree remote {remote.name} trusts key {trusted}"
        )
    repo = OSTree.Repo.new(Gio.File.new_for_path("/nonexistent"))  # gpg_verify_data reads no repository
    with _keyring_dir(remote) as keyring:
        try:
            result = repo.gpg_verify_data(
                None,
                GLib.Bytes.new(head.commit_bytes),
                GLib.Bytes.new(signatures),
                Gio.File.new_for_path(str(keyring)),
                None,
                None,
            )
        except GLib.Error as e:
            raise refuse(f"commit {head.commit}: its signatures cannot be checked: {e.message}") from None
    return _judge(result, head.commit, remote, fingerprints, refuse)


def _judge(
    result: Any, commit: str, remote: OstreeRemote, fingerprints: list[str], refuse: Any
) -> SignatureCheck:
    attr = OSTree.GpgSignatureAttr
    trusted = ", ".join(fingerprints) or ", ".join(str(k) for k in remote.gpg_keys)
    problems: list[str] = []
    for i in range(result.count_all()):
        sig = result.get_all(i)
        fpr = sig.get_child_value(int(attr.FINGERPRINT)).get_string()
        # For a bad signature gpgme names only the key id (its last 16 digits): name the whole key.
        fpr = next((f for f in fingerprints if f.endswith(fpr.upper())), fpr)
        if sig.get_child_value(int(attr.VALID)).get_boolean():
            return SignatureCheck(
                commit,
                remote.name,
                fpr,
                f"{sig.get_child_value(int(attr.USER_NAME)).get_string()} "
                f"<{sig.get_child_value(int(attr.USER_EMAIL)).get_string()}>",
                remote.source,
            )
        if sig.get_child_value(int(attr.KEY_MISSING)).get_boolean():
            problems.append(
                f"it is signed by key {fpr}, which is not a key of ostree remote {remote.name} "
                f"(it trusts {trusted})"
            )
        elif sig.get_child_value(int(attr.KEY_REVOKED)).get_boolean():
            problems.append(f"the signing key {fpr} is revoked")
        elif sig.get_child_value(int(attr.KEY_EXPIRED)).get_boolean():
            problems.append(f"the signing key {fpr} has expired")
        elif sig.get_child_value(int(attr.SIG_EXPIRED)).get_boolean():
            problems.append(f"the signature by key {fpr} has expired")
        else:
            problems.append(f"the signature by key {fpr} does not match the commit (changed after signing)")
    raise refuse(f"commit {commit}: " + ("; ".join(problems) or "no signature could be read"))


def verify_image_commit(image: Image, remote: OstreeRemote, *, reference: str) -> SignatureCheck:
    """Verify the signature of `image`'s ostree commit (read from its commit layer) against `remote`."""
    if image.layout is Layout.BOOTC or image.ostree_commit is None:
        raise SignatureError(
            f"{reference}: the image has no ostree commit, so ostree remote {remote.name} cannot verify it",
            hint="verify such images with the containers signature policy (ostree-image-signed:, --policy)",
        )
    layers = image.layers_with(LayerRole.OSTREE_COMMIT)
    if len(layers) != 1:
        raise SignatureError(f"{reference}: the image has {len(layers)} ostree commit layers", hint=_HINT)
    try:
        with open_layer_head(image, layers[0]) as stream:
            head = read_commit_head(stream)
    except (tarfile.TarError, EOFError) as e:
        raise SignatureError(f"{reference}: its commit layer is not a valid tar stream ({e})") from None
    if head is None:
        raise SignatureError(f"{reference}: its commit layer holds no ostree commit object", hint=_HINT)
    return verify_commit(head, remote, reference=reference, expected=image.ostree_commit)
