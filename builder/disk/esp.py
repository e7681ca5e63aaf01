"""Filling the FAT EFI system partition with mtools, since the build hosts' kernel cannot mount vfat."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from builder import run
from builder.devices import loop_device
from builder.disk.partition import Placed
from builder.errors import ImgbuildError

# mtools checks the FAT geometry against a drive description it does not have for image@@offset.
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}


class EspError(ImgbuildError):
    """The ESP tree cannot be copied into the FAT filesystem."""


def _drive(image: Path, part: Placed) -> str:
    return f"{os.fspath(image)}@@{part.start}"


@contextmanager
def _esp_device(image: Path, part: Placed) -> Iterator[str]:
    """A loop device of just the ESP for writing.

    mtools 4.0.32 writes wrongly through `image@@offset` once the image file is larger than 4 GiB ("No
    directory slots" on a fresh FAT32); a loop device limited to the partition avoids that.
    """
    with loop_device(image, offset=part.start, size=part.size) as device:
        yield os.fspath(device)


def populate_esp(image: Path, part: Placed, tree: Path) -> None:
    """Copy the directory `tree` into the root of the FAT filesystem in `part` (merging, overwriting)."""
    if not tree.is_dir():
        raise EspError(f"ESP tree {tree} is not a directory")
    with _esp_device(image, part) as drive:
        _copy_tree(drive, tree)


def populate_fat_image(image: Path, tree: Path) -> None:
    """Copy the directory `tree` into the root of the FAT filesystem image file `image` (a whole-file
    filesystem such as an ISO's El Torito EFI image, well under mtools' 4 GiB limit)."""
    if not tree.is_dir():
        raise EspError(f"ESP tree {tree} is not a directory")
    _copy_tree(os.fspath(image), tree)


def _copy_tree(drive: str, tree: Path) -> None:
    # Directories first, parents before children, so that mcopy never has to create one implicitly.
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel = Path(dirpath).relative_to(tree)
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                raise EspError(f"the ESP tree has a symlink {rel / name}; FAT cannot hold one")
            target = "::/" + (rel / name).as_posix()
            listed = run.run(["mdir", "-b", "-i", drive, target], env=MTOOLS_ENV, check=False)
            if listed.returncode != 0:
                run.run(["mmd", "-i", drive, target], env=MTOOLS_ENV)
        files = []
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file():
                raise EspError(f"the ESP tree has {rel / name}, which is not a regular file")
            files.append(os.fspath(path))
        if files:
            dest = "::/" + ("" if rel == Path() else rel.as_posix() + "/")
            # -o: overwrite without asking; -m: keep modification times; -Q: stop at the first error.
            run.run(["mcopy", "-o", "-m", "-Q", "-i", drive, *files, dest], env=MTOOLS_ENV)


def exists(image: Path, part: Placed, path: str) -> bool:
    """Whether `path` (relative to the FAT root) exists in the filesystem."""
    result = run.run(["mdir", "-b", "-i", _drive(image, part), "::/" + path], env=MTOOLS_ENV, check=False)
    return result.returncode == 0


def read_file(image: Path, part: Placed, path: str) -> bytes:
    """The content of `path` in the FAT filesystem (for checks and tests)."""
    return run.run(["mcopy", "-n", "-i", _drive(image, part), "::/" + path, "-"], env=MTOOLS_ENV).stdout
