"""customizations.directories and customizations.files, with owners resolved in the deployment's accounts.

Image Builder's rules: a directory that exists is fine only when no mode, user or group is asked for; a
file's parent must exist in the image or be one of the blueprint's directories (or its parents, with
ensure_parents); an existing file or symlink at a file's path is replaced.
"""

from __future__ import annotations

from builder.blueprint.model import Blueprint, DirectoryCustomization, FileCustomization
from builder.blueprint.policy import FILE_ROOTS
from builder.customize.accounts import AccountFiles
from builder.customize.target import Target
from builder.errors import BlueprintError
from builder.sizefmt import human

DIRECTORY_MODE = 0o755
FILE_MODE = 0o644


def _owner(
    accounts: AccountFiles, node: FileCustomization | DirectoryCustomization, key: str, index: int
) -> tuple[int, int]:
    try:
        uid = accounts.uid_of(node.user if node.user is not None else 0)
        gid = accounts.gid_of(node.group if node.group is not None else 0)
    except BlueprintError as e:
        raise BlueprintError(f"customizations.{key}[{index}]: {node.path}: {e.message}") from None
    return uid, gid


def _describe(mode: int, uid: int, gid: int) -> str:
    return f"mode {mode:04o}, owner {uid}:{gid}"


def _is_directory(target: Target, path: str) -> bool:
    host = target.host(path)
    return host.is_dir() and not host.is_symlink()


def check_files(bp: Blueprint, target: Target, accounts: AccountFiles) -> None:
    """Every rule checked against the image (and the accounts as they will be) before anything is written."""
    made: set[str] = set()
    for index, directory in enumerate(bp.directories):
        _owner(accounts, directory, "directories", index)
        host = target.check_writable(directory.path)
        if host.is_symlink() or (host.exists() and not host.is_dir()):
            what = "a symlink" if host.is_symlink() else "a file"
            raise BlueprintError(
                f"customizations.directories[{index}]: {directory.path} is {what} in the image",
                hint="a directory is never made over (or through) something the image ships",
            )
        explicit = directory.mode is not None or directory.user is not None or directory.group is not None
        if _is_directory(target, directory.path):
            if explicit:
                raise BlueprintError(
                    f"customizations.directories[{index}]: {directory.path} exists in the image: "
                    "its mode and owner cannot be changed",
                    hint="leave out mode, user and group for a directory the image already has",
                )
            continue
        parent = directory.path.rsplit("/", 1)[0]
        if not directory.ensure_parents and parent not in made and not _is_directory(target, parent):
            raise BlueprintError(
                f"customizations.directories[{index}]: {parent} does not exist in the image",
                hint="set ensure_parents = true or add the parent to customizations.directories first",
            )
        path = directory.path
        while path and path not in made:  # with ensure_parents, its missing parents are made too
            made.add(path)
            path = path.rsplit("/", 1)[0]
    for index, file in enumerate(bp.files):
        _owner(accounts, file, "files", index)
        target.check_writable(file.path)
        parent = file.path.rsplit("/", 1)[0]
        # The roots files may go under are made when missing: /var/roothome and /var/usrlocal/bin are made
        # by systemd-tmpfiles on first boot, so a fresh stateroot does not have them yet.
        if (
            parent not in FILE_ROOTS
            and parent not in made
            and target.known(parent)
            and not _is_directory(target, parent)
        ):
            raise BlueprintError(
                f"customizations.files[{index}]: the parent of {file.path} does not exist in the image",
                hint=f"add {parent} to customizations.directories (with ensure_parents = true if needed)",
            )
        if _is_directory(target, file.path):
            raise BlueprintError(f"customizations.files[{index}]: {file.path} is a directory in the image")


def apply_files(bp: Blueprint, target: Target) -> list[str]:
    if not (bp.files or bp.directories):
        return []
    accounts = AccountFiles.read(target)
    check_files(bp, target, accounts)
    done = []
    for index, directory in enumerate(bp.directories):
        uid, gid = _owner(accounts, directory, "directories", index)
        mode = directory.mode if directory.mode is not None else DIRECTORY_MODE
        if _is_directory(target, directory.path):
            done.append(f"directory {directory.path}: already in the image")
            continue
        target.mkdir(directory.path, mode, uid, gid, parents=directory.ensure_parents)
        done.append(f"directory {directory.path}: {_describe(mode, uid, gid)}")
    for index, file in enumerate(bp.files):
        uid, gid = _owner(accounts, file, "files", index)
        mode = file.mode if file.mode is not None else FILE_MODE
        data = (file.data or "").encode()
        target.write(file.path, data, mode, uid, gid)
        done.append(f"file {file.path}: {human(len(data))}, {_describe(mode, uid, gid)}")
    return done
