"""grub.cfg for ostree's Boot Loader Specification entries.

ostree 2022.7 with `sysroot.bootloader=none` writes `loader/entries/ostree-*.conf` on the /boot filesystem
(`loader` being a symlink to `loader.0` or `loader.1`) and no bootloader configuration. A GRUB with
`blscfg` (Fedora's) reads those entries itself; for any other GRUB (Debian's) each entry becomes a
`menuentry`. Paths are relative to the /boot filesystem: 2022.7 has no `sysroot.bootprefix`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.bootloader import BootloaderError

GRUB_CFG = Path("grub2/grub.cfg")
# Characters that GRUB's parser treats as plain text; anything else in a word gets single quotes.
_GRUB_PLAIN = re.compile(r"[A-Za-z0-9_./:=,+@%-]+")


@dataclass(frozen=True)
class BlsEntry:
    filename: str  # e.g. ostree-1-debian.conf
    title: str
    version: str
    options: str
    linux: str
    initrd: tuple[str, ...] = ()
    devicetree: str = ""


def _entries_dir(boot_dir: Path) -> Path:
    """`boot_dir/loader/entries`, following ostree's `loader -> loader.N` link without leaving boot_dir."""
    loader = boot_dir / "loader"
    if loader.is_symlink():
        target = str(loader.readlink())
        if "/" in target or target in (".", ".."):
            raise BootloaderError(f"{loader} points to {target!r}; expected ostree's loader.N")
        loader = boot_dir / target
    return loader / "entries"


def parse_bls_entry(path: Path) -> BlsEntry:
    fields: dict[str, str] = {}
    initrd: list[str] = []
    for raw in path.read_text(errors="replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "initrd":
            initrd += value.split()
        else:
            fields[key] = value
    if not fields.get("linux"):
        raise BootloaderError(f"BLS entry {path.name} has no linux line")
    return BlsEntry(
        filename=path.name,
        title=fields.get("title", path.stem),
        version=fields.get("version", ""),
        options=fields.get("options", ""),
        linux=fields["linux"],
        initrd=tuple(initrd),
        devicetree=fields.get("devicetree", ""),
    )


def _version_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Compare versions as people do: digit runs as numbers (ostree numbers its entries 1, 2, ... 10)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.findall(r"\d+|[^\d]+", text))


def parse_bls_entries(boot_dir: Path) -> list[BlsEntry]:
    """The BLS entries on the /boot filesystem mounted (or checked out) at `boot_dir`, newest first."""
    entries_dir = _entries_dir(boot_dir)
    if not entries_dir.is_dir():
        return []
    entries = [parse_bls_entry(p) for p in sorted(entries_dir.glob("*.conf")) if p.is_file()]
    # ostree gives the newest deployment the highest version.
    entries.sort(key=lambda e: (_version_key(e.version), e.filename), reverse=True)
    return entries


def grub_has_blscfg(grub_dir: Path) -> bool:
    """Whether the GRUB in `grub_dir` (a module directory) has Fedora's blscfg command."""
    return (grub_dir / "blscfg.mod").is_file()


def split_kernel_args(options: str) -> list[str]:
    """Split a kernel command line as the kernel does: on blanks outside double quotes (kept)."""
    return re.findall(r'(?:[^\s"]|"[^"]*"?)+', options)


def grub_quote(word: str) -> str:
    if _GRUB_PLAIN.fullmatch(word):
        return word
    return "'" + word.replace("'", "'\\''") + "'"


def render_menuentry(entry: BlsEntry) -> str:
    args = " ".join(grub_quote(a) for a in split_kernel_args(entry.options))
    lines = [f"menuentry {grub_quote(entry.title)} --id {grub_quote(Path(entry.filename).stem)} {{"]
    lines.append(f"    linux {grub_quote(entry.linux)} {args}".rstrip())
    if entry.initrd:
        lines.append("    initrd " + " ".join(grub_quote(i) for i in entry.initrd))
    if entry.devicetree:
        lines.append(f"    devicetree {grub_quote(entry.devicetree)}")
    lines.append("}")
    return "\n".join(lines)


def render_grub_cfg(
    entries: Sequence[BlsEntry],
    *,
    use_blscfg: bool,
    timeout: int = 1,
    serial: bool = True,
    boot_fs_uuid: str | None = None,
) -> str:
    parts = ["# Written by imgbuild from the BLS entries in /loader/entries."]
    if boot_fs_uuid:
        # Whoever loaded us (core.img, the ESP stub) found /boot already; this makes the file standalone.
        parts.append(f"search --no-floppy --fs-uuid --set=root {boot_fs_uuid}")
    if serial:
        # The first 16550 UART (ttyS0) on x86. On arm64 there is no such port; the firmware's console
        # (what GRUB's "console" terminal writes to) is already the serial line there.
        parts.append(
            'if [ "$grub_cpu" = "i386" -o "$grub_cpu" = "x86_64" ]; then\n'
            "    if serial --unit=0 --speed=115200; then\n"
            "        terminal_input serial console\n"
            "        terminal_output serial console\n"
            "    fi\n"
            "fi"
        )
    parts += [f"set timeout={int(timeout)}", "set default=0"]
    if use_blscfg:
        parts += ["insmod blscfg", "blscfg"]
    else:
        if not entries:
            raise BootloaderError("no BLS entries to boot", hint="was the OS deployed into /boot?")
        parts += [render_menuentry(e) for e in entries]
    return "\n".join(parts) + "\n"


def write_grub_cfg(
    boot_dir: Path,
    *,
    entries: Sequence[BlsEntry],
    use_blscfg: bool,
    timeout: int = 1,
    serial: bool = True,
    boot_fs_uuid: str | None = None,
) -> Path:
    """Write `boot_dir/grub2/grub.cfg` (atomically) and return its path."""
    text = render_grub_cfg(
        entries, use_blscfg=use_blscfg, timeout=timeout, serial=serial, boot_fs_uuid=boot_fs_uuid
    )
    path = boot_dir / GRUB_CFG
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)
    return path
