"""Path rules for images deployed from a container (Image Builder's ostree/bootc policies, research §1.3).

Each function returns None for an accepted path or the reason it is refused.
"""

from __future__ import annotations

import posixpath

# bootc's mount point policy: `/` and `/boot` exactly, and sub-paths of /var except these (ostree owns them).
VAR_DENIED = frozenset(
    f"/var/{name}" for name in ("home", "lock", "mail", "mnt", "roothome", "run", "srv", "usrlocal")
)
FILE_ROOTS = ("/etc", "/root", "/usr/local/bin", "/usr/local/sbin")
FILE_DENIED = frozenset(("/etc/fstab", "/etc/shadow", "/etc/passwd", "/etc/group"))


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def canonical_problem(path: str) -> str | None:
    """Why `path` is not an absolute, canonical path (None if it is)."""
    if not path.startswith("/"):
        return f"path {path!r} must be absolute"
    if "\0" in path:
        return "path must not contain a NUL character"
    if posixpath.normpath(path) != path or path.startswith("//"):
        canonical = posixpath.normpath(path)
        return f"path {path!r} must be canonical (no trailing '/', '//', '.' or '..'): {canonical!r}"
    return None


def mountpoint_problem(path: str, *, boot_efi: bool = False) -> str | None:
    if problem := canonical_problem(path):
        return problem
    if path in ("/", "/boot") or (boot_efi and path == "/boot/efi"):
        return None
    if path == "/var":
        return (
            "mount point \"/var\" is not allowed: the ostree stateroot's /var is the deployment's /var; "
            "mount sub-paths of /var instead"
        )
    if under(path, "/var"):
        denied = next((d for d in VAR_DENIED if under(path, d)), None)
        if denied:
            return f"mount point {path!r} is not allowed: ostree links {denied} into the deployment"
        return None
    if under(path, "/usr"):
        return f"mount point {path!r} is not allowed: /usr is the read-only image"
    return f"mount point {path!r} is not allowed: only /, /boot and sub-paths of /var can be mount points"


def file_problem(path: str) -> str | None:
    if problem := canonical_problem(path):
        return problem
    if path in FILE_DENIED:
        return f"file {path!r} is not allowed: use the user and group customizations instead"
    if under(path, "/usr") and not any(under(path, r) for r in FILE_ROOTS):
        return f"file {path!r} is not allowed: /usr is the read-only image (only /usr/local/bin and sbin)"
    if not any(under(path, r) for r in FILE_ROOTS) or path in FILE_ROOTS:
        return f"file {path!r} is not allowed: files can go only under {', '.join(FILE_ROOTS)}"
    return None


def directory_problem(path: str) -> str | None:
    if problem := canonical_problem(path):
        return problem
    if not under(path, "/etc") or path == "/etc":
        return f"directory {path!r} is not allowed: directories can be made only under /etc"
    return None
