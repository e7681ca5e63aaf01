"""Which content objects of a commit go into which layer of its ostree-native image.

The aim is that an update re-downloads little: content that changes together lands in the same layer, and
content that rarely changes stays in layers whose digest survives the update. So objects are grouped into
components (a package of the commit's dpkg database, else a directory under /usr), the kernel and its
modules get a layer of their own (they change with most updates), each large component gets a layer alone,
and the small ones are packed, in name order, into the remaining layers by size, cut where their names say
(see `_partition`): a package that is added, removed or resized changes its own layer and rarely another.

Objects no component claims (config under /usr/etc, top-level symlinks) stay in the commit layer, which
changes with every commit anyway. This module does no I/O: the caller walks the commit and reads its files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

# Where a dpkg database may live in a commit: Debian's own place, and where ostree-based Debian systems move
# it so that it is part of the read-only /usr (the first one found wins).
DPKG_DATABASE_DIRS = ("usr/lib/sysimage/dpkg", "usr/share/dpkg/database", "usr/lib/dpkg", "var/lib/dpkg")
KERNEL = "kernel"
KERNEL_DIRS = ("usr/lib/modules/", "usr/lib/ostree-boot/", "boot/")
KERNEL_PACKAGE_PREFIXES = ("linux-image-", "linux-modules-", "kernel-")
# Directories merged into /usr on a usrmerged system: dpkg lists still name the old paths.
_USRMERGED = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32"})
# Below /usr/lib and /usr/share, group one level deeper: they hold most of the tree.
_DEEP_DIRS = frozenset({"lib", "lib64", "libexec", "share"})
# A packed run of small components is at least this fraction of its fair share (total / bins).
MIN_RUN_FRACTION = 0.4
# A tar header per object: many tiny files weigh something even when their content is empty.
OBJECT_OVERHEAD = 512


@dataclass(frozen=True)
class ContentObject:
    checksum: str
    size: int  # bytes of content (0 for a symlink)
    paths: tuple[str, ...]  # sorted commit paths without a leading slash ("usr/bin/bash")

    @property
    def weight(self) -> int:
        return self.size + OBJECT_OVERHEAD * (1 + len(self.paths))


@dataclass(frozen=True)
class Component:
    name: str
    objects: tuple[str, ...]  # checksums
    size: int


@dataclass(frozen=True)
class Chunk:
    """One content layer: its history name, the components it holds and their objects."""

    name: str
    components: tuple[str, ...]
    objects: tuple[str, ...]
    size: int


@dataclass(frozen=True)
class ChunkPlan:
    remainder: tuple[str, ...]  # objects written into the commit layer
    chunks: tuple[Chunk, ...]


def find_dpkg_database(paths: Collection[str]) -> str | None:
    """The directory of a dpkg database (`status` and `info/*.list`) among the commit's file paths."""
    found = set()
    for path in paths:
        head, sep, tail = path.rpartition("/info/")
        if sep and tail.endswith(".list") and "/" not in tail and f"{head}/status" in paths:
            found.add(head)
    for preferred in DPKG_DATABASE_DIRS:
        if preferred in found:
            return preferred
    return min(found) if found else None


def installed_packages(status: str) -> set[str]:
    """Names of the packages dpkg's status file records as installed (all of them if it has no Status)."""
    installed: set[str] = set()
    for stanza in status.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line.startswith((" ", "\t")):
                fields[key.strip().lower()] = value.strip()
        name = fields.get("package")
        if name and fields.get("status", "install ok installed").endswith(" installed"):
            installed.add(name)
    return installed


def package_of_list(filename: str) -> str:
    """`libc6:amd64.list` -> `libc6`."""
    return filename.removesuffix(".list").partition(":")[0]


def commit_path_of(listed: str, present: Collection[str]) -> str | None:
    """Where a path from a dpkg list is in an ostree commit (/etc is /usr/etc, /bin may be /usr/bin)."""
    path = listed.strip().strip("/")
    if not path or path == ".":
        return None
    candidates = [path]
    first = path.split("/", 1)[0]
    if first == "etc" or first in _USRMERGED:
        candidates.append(f"usr/{path}")
    for candidate in candidates:
        if candidate in present:
            return candidate
    return None


def owners_from_lists(lists: Mapping[str, str], present: Collection[str]) -> dict[str, set[str]]:
    """Commit path -> names of the packages whose dpkg list (package -> list text) names it."""
    owners: dict[str, set[str]] = {}
    for package, text in lists.items():
        for line in text.splitlines():
            path = commit_path_of(line, present)
            if path is not None:
                owners.setdefault(path, set()).add(package)
    return owners


def package_owners(files: Mapping[str, str], read_text: Callable[[str], str]) -> dict[str, set[str]]:
    """Commit path -> the dpkg packages that own it, from the database among `files` (path -> checksum);
    `read_text(checksum)` reads a file of the commit. Empty when the commit has no dpkg database."""
    database = find_dpkg_database(files)
    if database is None:
        return {}
    installed = installed_packages(read_text(files[f"{database}/status"]))
    prefix = f"{database}/info/"
    lists: dict[str, str] = {}
    for path, checksum in sorted(files.items()):
        name = path.removeprefix(prefix)
        if path.startswith(prefix) and name.endswith(".list") and "/" not in name:
            package = package_of_list(name)
            if not installed or package in installed:
                lists[package] = lists.get(package, "") + read_text(checksum)
    return owners_from_lists(lists, files)


def is_kernel_path(path: str) -> bool:
    return path.startswith(KERNEL_DIRS)


def is_kernel_package(name: str) -> bool:
    return name.startswith(KERNEL_PACKAGE_PREFIXES) or name == KERNEL


def path_group(path: str) -> str | None:
    """The directory component of an object no package owns: `usr/bin`, `usr/share/doc`; None for layer 0."""
    parts = path.split("/")
    if parts[0] != "usr" or len(parts) < 3 or parts[1] == "etc":
        return None
    if parts[1] in _DEEP_DIRS and len(parts) >= 4:
        return "/".join(parts[:3])
    return "/".join(parts[:2])


def component_of(obj: ContentObject, owners: Mapping[str, Collection[str]]) -> str | None:
    """The component an object belongs to, or None when it stays in the commit layer."""
    if not obj.paths:
        return None
    if any(is_kernel_path(p) for p in obj.paths):
        return KERNEL
    packages = sorted({pkg for p in obj.paths for pkg in owners.get(p, ())})
    if packages:
        # An object shared by several packages goes with the first of them: any fixed choice is stable.
        return KERNEL if is_kernel_package(packages[0]) else packages[0]
    return path_group(obj.paths[0])


def chunk_name(components: tuple[str, ...]) -> str:
    if len(components) == 1:
        return components[0]
    if len(components) == 2:
        return f"{components[0]} and {components[1]}"
    return f"{len(components)} components"


def _chunk(parts: Iterable[Component], kernel_names: tuple[str, ...] = ()) -> Chunk:
    parts = sorted(parts, key=lambda c: c.name)
    names = tuple(n for c in parts for n in ((kernel_names or (KERNEL,)) if c.name == KERNEL else (c.name,)))
    objects = tuple(o for c in parts for o in c.objects)
    return Chunk(chunk_name(names), names, objects, sum(c.size for c in parts))


def cut_value(name: str) -> float:
    """A fixed pseudo-random number in [0, 1) for a component name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64


def _partition(components: list[Component], bins: int) -> list[list[Component]]:
    """Cut name-ordered components into at most `bins` runs of roughly equal size.

    A run ends at the first component past a minimum size whose name's `cut_value` is below a threshold
    (content-defined chunking, as in rsync or casync): where runs end depends on the names near the cut, so
    adding, removing or resizing a package changes its own run and seldom another, and the other layers keep
    their digests. (Cutting at fixed fractions of the total instead moves every later cut.) Measured on
    random package sets: about 1.3 runs change when a package is added, against 8.5 with fixed fractions;
    the price is that about three quarters of the bins get used.
    """
    total = sum(c.size for c in components)
    threshold = bins / len(components)  # about one cut point per bin's share of the components
    minimum = MIN_RUN_FRACTION * total / bins
    while True:
        runs: list[list[Component]] = [[]]
        size = 0
        for component in components:
            runs[-1].append(component)
            size += component.size
            if size >= minimum and cut_value(component.name) < threshold:
                runs.append([])
                size = 0
        runs = [run for run in runs if run]
        if len(runs) <= bins:
            return runs
        minimum *= 1.2  # too many runs: longer ones (ends once every run but the last outweighs total/bins)


def pack(components: list[Component], slots: int, kernel_names: tuple[str, ...] = ()) -> list[Chunk]:
    """Group components into at most `slots` chunks: the kernel alone, large ones alone, small ones packed."""
    if slots <= 0 or not components:
        return []
    rest = sorted(components, key=lambda c: c.name)
    chunks: list[Chunk] = []
    kernel = [c for c in rest if c.name == KERNEL]
    if kernel and slots >= 2:
        chunks.append(_chunk(kernel, kernel_names))
        rest.remove(kernel[0])
        slots -= 1
    while rest and len(rest) > slots:
        target = sum(c.size for c in rest) / slots
        large = sorted((c for c in rest if c.size >= target), key=lambda c: (-c.size, c.name))
        # Leave a slot for the small ones.
        large = large[: slots - 1]
        if not large:
            break
        for component in large:
            chunks.append(_chunk([component], kernel_names))
            rest.remove(component)
        slots -= len(large)
    if len(rest) <= slots:
        chunks.extend(_chunk([c], kernel_names) for c in rest)
    else:
        chunks.extend(_chunk(run, kernel_names) for run in _partition(rest, slots))
    return sorted(chunks, key=lambda c: (-c.size, c.name))


def plan_chunks(
    objects: Mapping[str, ContentObject],
    owners: Mapping[str, Collection[str]],
    max_layers: int,
    kernel_packages: Iterable[str] = (),
) -> ChunkPlan:
    """Assign every content object to the commit layer or to one of at most `max_layers - 1` chunks."""
    members: dict[str, list[str]] = {}
    remainder: list[str] = []
    for checksum in sorted(objects, key=lambda c: (objects[c].paths, c)):
        name = component_of(objects[checksum], owners)
        if name is None:
            remainder.append(checksum)
        else:
            members.setdefault(name, []).append(checksum)
    components = [
        Component(name, tuple(sums), sum(objects[s].weight for s in sums)) for name, sums in members.items()
    ]
    chunks = pack(components, max_layers - 1, tuple(sorted(set(kernel_packages))))
    placed = {s for chunk in chunks for s in chunk.objects}
    remainder += [s for c in components for s in c.objects if s not in placed]
    remainder.sort(key=lambda c: (objects[c].paths, c))
    return ChunkPlan(tuple(remainder), tuple(chunks))
