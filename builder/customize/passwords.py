"""Password hashes for /etc/shadow, as Image Builder makes them (research §1.2, user)."""

from __future__ import annotations

import dataclasses
import hashlib
import warnings

from builder import run
from builder.blueprint.document import CRYPTED_PREFIXES
from builder.blueprint.model import Blueprint

NO_PASSWORD = "!"  # what useradd leaves: no password login, ssh keys still work


def shadow_hash(password: str | None) -> str:
    """The /etc/shadow field for a blueprint password: kept if crypted, else hashed with SHA-512 crypt."""
    if not password:
        return NO_PASSWORD
    if password.startswith(CRYPTED_PREFIXES):
        return password
    return sha512_crypt(password)


_SALT_ALPHABET = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def sha512_crypt(password: str, salt: str | None = None) -> str:
    """`$6$<salt>$...`; a random 16-character salt unless one is given."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt  # deprecated in 3.11, gone in 3.13: openssl does the same below

        hashed = crypt.crypt(password, f"$6${salt}" if salt else crypt.mksalt(crypt.METHOD_SHA512))
        if hashed and hashed.startswith("$6$"):
            return hashed
    except ImportError:
        pass
    argv = ["openssl", "passwd", "-6", *(["-salt", salt] if salt else []), "-stdin"]
    return run.run(argv, input=password.encode() + b"\n").out.strip()


def crypt_passwords(bp: Blueprint, *, seed: bytes | None = None) -> Blueprint:
    """The blueprint with every plain-text password replaced by its SHA-512 crypt hash.

    For whoever stores or writes the blueprint (a manifest, the compose service), as Weldr hashes at push
    time. With `seed`, each salt is derived from it and the user name, so the same inputs give the same
    hashes (a reproducible manifest); without it the salts are random.
    """
    users = []
    for user in bp.users:
        if user.password and not user.password.startswith(CRYPTED_PREFIXES):
            salt = None
            if seed is not None:
                digest = hashlib.sha256(seed + b"\0" + user.name.encode()).digest()
                salt = "".join(chr(_SALT_ALPHABET[b % 64]) for b in digest[:16])
            user = dataclasses.replace(user, password=sha512_crypt(user.password, salt))
        users.append(user)
    return dataclasses.replace(bp, users=tuple(users))
