"""ostree remotes: where the keys that verify a commit come from, and the configuration written into an image.

A remote is either named on the command line with its keys (`--ostree-remote NAME --gpg-key FILE`), or read
from the standard place, `/etc/ostree/remotes.d/NAME.conf` (`[remote "NAME"]` with `gpg-verify`,
`gpgkeypath`, `sign-verify`, `verification-ed25519-*`), plus the keyring `ostree remote gpg-import` keeps in
the system repository, `/ostree/repo/NAME.trustedkeys.gpg`. IMGBUILD_OSTREE_ROOT (default `/`) re-roots
all of these paths, the ones written inside a .conf included, so tests never touch the host's /etc.

Only the remote's own keys count: unlike libostree, the global `trusted.gpg.d` keyrings are not added, so a
key trusted for some other remote cannot vouch for this one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImgbuildError
from builder.ostree.gi import GLib

ROOT_ENV = "IMGBUILD_OSTREE_ROOT"
REMOTES_D = "etc/ostree/remotes.d"
# Where --install-remote puts the keys in the image (the .conf names it with gpgkeypath).
IMAGE_KEY_DIR = "etc/pki/ostree"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


class RemoteError(ImgbuildError):
    """The ostree remote that should verify the image is missing or unusable."""


@dataclass(frozen=True)
class OstreeRemote:
    name: str
    gpg_keys: tuple[Path, ...]  # files holding public keys (binary or ASCII-armoured), host paths
    source: str  # where it was defined: a .conf file, or --gpg-key
    gpg_verify: bool = True
    ed25519: bool = False  # the remote asks for ed25519 signatures (sign-verify)
    url: str | None = None

    def describe(self) -> str:
        keys = ", ".join(str(k) for k in self.gpg_keys) or "no keys"
        return f"ostree remote {self.name} ({self.source}; {keys})"


def config_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or "/")


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise RemoteError(
            f"{name!r} is not a valid ostree remote name", hint="letters, digits, '_', '.', '-'"
        )


def from_key_files(name: str, keys: tuple[Path, ...]) -> OstreeRemote:
    """The remote given as --ostree-remote NAME --gpg-key FILE..."""
    _check_name(name)
    if not keys:
        raise RemoteError(f"--ostree-remote {name} needs its keys", hint="pass --gpg-key FILE (repeatable)")
    for key in keys:
        if not key.is_file():
            raise RemoteError(f"the GPG key file {key} does not exist", hint="pass a public key file")
    return OstreeRemote(name, tuple(k.resolve() for k in keys), "--gpg-key")


def _under(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _key_files(root: Path, entries: list[str], conf: Path) -> list[Path]:
    files: list[Path] = []
    for entry in entries:
        path = _under(root, entry)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            raise RemoteError(
                f"{conf}: gpgkeypath {entry} does not exist", hint="install the remote's keys there"
            )
    return files


def find_remote(name: str, root: Path | None = None) -> OstreeRemote:
    """The remote NAME from ROOT/etc/ostree/remotes.d/*.conf (RemoteError when no file defines it)."""
    _check_name(name)
    root = root if root is not None else config_root()
    remotes_d = root / REMOTES_D
    group = f'remote "{name}"'
    confs = sorted(remotes_d.glob("*.conf")) if remotes_d.is_dir() else []
    for conf in confs:
        keyfile = GLib.KeyFile.new()
        try:
            keyfile.load_from_file(str(conf), GLib.KeyFileFlags.NONE)
        except GLib.Error as e:
            raise RemoteError(f"cannot read {conf}: {e.message}", hint="fix the file's syntax") from None
        if not keyfile.has_group(group):
            continue
        return _from_keyfile(name, keyfile, group, conf, root)
    raise RemoteError(
        f"no ostree remote {name!r} is configured in {remotes_d}",
        hint=f"add {remotes_d}/{name}.conf, or pass --ostree-remote {name} --gpg-key FILE",
    )


def _from_keyfile(name: str, keyfile: GLib.KeyFile, group: str, conf: Path, root: Path) -> OstreeRemote:
    present = set(keyfile.get_keys(group)[0])

    def _get(key: str) -> str | None:
        return str(keyfile.get_value(group, key)).strip() if key in present else None

    gpg_verify = (_get("gpg-verify") or "true").lower() not in ("false", "0", "no")
    sign_verify = (_get("sign-verify") or "false").lower()
    ed25519 = sign_verify not in ("false", "0", "no") or any(
        k in present for k in ("verification-ed25519-key", "verification-ed25519-file")
    )
    paths = [p.strip() for p in re.split(r"[;,]", _get("gpgkeypath") or "") if p.strip()]
    keys = _key_files(root, paths, conf)
    keyring = root / "ostree" / "repo" / f"{name}.trustedkeys.gpg"
    if keyring.is_file():
        keys.append(keyring)
    return OstreeRemote(
        name,
        tuple(keys),
        str(conf),
        gpg_verify=gpg_verify,
        ed25519=ed25519,
        url=_get("url"),
    )


def image_key_path(remote: OstreeRemote, index: int) -> str:
    """Where --install-remote puts key `index` of `remote` in the image (absolute, as the image sees it)."""
    return f"/{IMAGE_KEY_DIR}/{remote.name}-{index}.gpg"


def image_config(remote: OstreeRemote) -> str:
    """The remotes.d/NAME.conf for the image: same verification, keys where --install-remote puts them.

    An image's updates come from its origin (a container reference), so the url only matters to ostree's
    own pulls; without one the remote is written with `url=` empty, which ostree accepts for verification.
    """
    keys = ";".join(image_key_path(remote, i) for i in range(len(remote.gpg_keys)))
    lines = [
        f'[remote "{remote.name}"]',
        f"url={remote.url or ''}",
        f"gpg-verify={'true' if remote.gpg_verify else 'false'}",
    ]
    if keys:
        lines.append(f"gpgkeypath={keys}")
    return "\n".join(lines) + "\n"


def install_files(etc: Path, files: dict[str, bytes]) -> list[Path]:
    """Write --install-remote's files (absolute /etc/... paths) into a deployment's /etc (`etc`)."""
    written: list[Path] = []
    for name, data in sorted(files.items()):
        relative = Path(name).relative_to("/etc")
        if ".." in relative.parts:
            raise ValueError(f"invalid path {name!r}")
        path = etc / relative
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(data)
        partial.chmod(0o644)
        partial.replace(path)
        written.append(path)
    return written
