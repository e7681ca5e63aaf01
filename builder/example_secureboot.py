"""The Secure Boot variants of the example OS: the same Debian 12 system plus Debian's signed boot chain.

`secureboot` carries shim (signed by Microsoft's UEFI CA), GRUB (signed by Debian) and the shim helpers in
bootupd's layout, as current Fedora and CentOS images do: `usr/lib/bootupd/updates/EFI/{BOOT,debian}/…` and
`usr/lib/bootupd/updates/EFI.json`. `secureboot-ostree-boot` carries the same files in the older
`usr/lib/ostree-boot/efi/EFI/…` layout of Fedora 36. Debian's kernel is signed already.

The variants are derived from the default example (examples/debian/, untouched) the way images are derived
from a base: its commit plus an overlay, committed with `--tree=ref` and `--tree=dir`. The overlay holds the
signed EFI binaries of the packages in examples/secureboot/packages.txt (downloaded by apt for the target
architecture and unpacked with dpkg-deb: no maintainer script and no target program runs, so no second
mmdebstrap and no emulation) and a self-test that prints the Secure Boot state. The variants live in
`<examples>/<variant>/<arch>/` with a cache key of their own (the default example's key and commit, this
recipe, the archive's state), so building them never changes the default example's key. One download
serves every stale variant of an architecture.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder import debfetch, example, paths, run
from builder.arch import Arch
from builder.errors import NeedsRoot

log = logging.getLogger(__name__)

RECIPE_DIR = paths.PROJECT_ROOT / "examples" / "secureboot"
CACHE_FORMAT = "imgbuild-example-secureboot-2"  # 2: derived from the default example
VENDOR = "debian"  # the directory Debian's signed GRUB takes its prefix from (/EFI/debian)
SELFTEST = "usr/libexec/imgbuild-selftest"
EFI_SUFFIX = {Arch.X86_64: "x64", Arch.AARCH64: "aa64"}
SIGNED_GRUB_DIR = {
    Arch.X86_64: "usr/lib/grub/x86_64-efi-signed",
    Arch.AARCH64: "usr/lib/grub/arm64-efi-signed",
}


class Variant(enum.StrEnum):
    SECUREBOOT = "secureboot"  # bootupd's layout
    SECUREBOOT_OSTREE_BOOT = "secureboot-ostree-boot"  # the older ostree-boot layout

    @property
    def payload_dir(self) -> str:
        if self is Variant.SECUREBOOT:
            return "usr/lib/bootupd/updates/EFI"
        return "usr/lib/ostree-boot/efi/EFI"


def variant_ref(variant: Variant, arch: Arch) -> str:
    return f"debian/12/{arch.value}/example-{variant.value}"


def archive_name(variant: Variant, arch: Arch) -> str:
    return f"debian-ostree-{variant.value}-{arch.value}.ociarchive"


def read_packages(arch: Arch) -> tuple[str, ...]:
    wanted = []
    for raw in (RECIPE_DIR / "packages.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        only, sep, name = line.partition(":")
        if sep and only.strip() == arch.debian:
            wanted.append(name.strip())
        elif line and not sep:
            wanted.append(line)
    return tuple(wanted)


def recipe_digest() -> str:
    """The base recipe and this variant's files (examples/secureboot, this module)."""
    h = hashlib.sha256(example.recipe_digest().encode())
    files = sorted(p for p in RECIPE_DIR.rglob("*") if p.is_file() and p.suffix != ".md")
    for path in (*files, Path(__file__).resolve()):
        rel = path.relative_to(paths.PROJECT_ROOT).as_posix()
        h.update(f"{rel}\0{path.stat().st_mode & 0o111:o}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def cache_key(
    variant: Variant,
    arch: Arch,
    recipe: str,
    archive: tuple[tuple[str, str], ...],
    base_key: str,
    base_commit: str,
) -> str:
    """The variant's recipe, the archive's state (it pins the signed packages' versions) and the default
    example it is derived from."""
    h = hashlib.sha256(
        f"{CACHE_FORMAT}\0{variant.value}\0{arch.value}\0{recipe}\0{base_key}\0{base_commit}\0".encode()
    )
    for url, digest in archive:
        h.update(f"{url}\0{digest}\0".encode())
    return h.hexdigest()


def place_payload(tree: Path, arch: Arch, variant: Variant, versions: dict[str, str]) -> Path:
    """Put the installed signed shim, its helpers and GRUB where `variant`'s layout has them, the way
    Fedora's packages and bootupd's `generate-update-metadata` lay them out:

        EFI/BOOT/BOOT<ARCH>.EFI   shim, what firmware boots without a boot entry
        EFI/BOOT/fb<arch>.efi      shim's fallback: makes the boot entry from EFI/*/BOOT<ARCH>.CSV
        EFI/debian/shim<arch>.efi  shim again, the target of that boot entry
        EFI/debian/grub<arch>.efi  GRUB signed by Debian, which shim loads from its own directory
        EFI/debian/mm<arch>.efi    MokManager
        EFI/debian/BOOT<ARCH>.CSV  the boot entry the fallback creates (UTF-16)

    and, for bootupd's layout, `usr/lib/bootupd/updates/EFI.json`. Returns the EFI directory."""
    sfx = EFI_SUFFIX[arch]
    shim_dir = tree / "usr/lib/shim"
    efi = tree / variant.payload_dir
    boot, vendor = efi / "BOOT", efi / VENDOR
    boot.mkdir(parents=True)
    vendor.mkdir()
    files = {
        boot / f"BOOT{sfx.upper()}.EFI": shim_dir / f"shim{sfx}.efi.signed",
        boot / f"fb{sfx}.efi": shim_dir / f"fb{sfx}.efi.signed",
        vendor / f"shim{sfx}.efi": shim_dir / f"shim{sfx}.efi.signed",
        vendor / f"mm{sfx}.efi": shim_dir / f"mm{sfx}.efi.signed",
        vendor / f"grub{sfx}.efi": tree / SIGNED_GRUB_DIR[arch] / f"grub{sfx}.efi.signed",
    }
    for dest, src in files.items():
        shutil.copy2(src, dest)
    csv = f"shim{sfx}.efi,{VENDOR},,This is the boot entry for {VENDOR}\n"
    (vendor / f"BOOT{sfx.upper()}.CSV").write_bytes(b"\xff\xfe" + csv.encode("utf-16-le"))
    if variant is Variant.SECUREBOOT:
        newest = max(src.stat().st_mtime for src in files.values())
        stamp = datetime.datetime.fromtimestamp(newest, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        wanted = (f"shim-signed:{arch.debian}", f"grub-efi-{arch.debian}-signed:{arch.debian}")
        version = ",".join(f"{name.split(':')[0]}-{versions[name]}" for name in wanted if name in versions)
        metadata = {"timestamp": stamp, "version": version}
        (efi.parent / "EFI.json").write_text(json.dumps(metadata, sort_keys=True) + "\n")
    return efi


def install_selftest(tree: Path) -> None:
    """The example's self-test, preceded by a line with the Secure Boot state."""
    base = tree / SELFTEST
    base.rename(base.with_name(base.name + ".base"))
    shutil.copy2(RECIPE_DIR / "imgbuild-selftest-sb", base)
    base.chmod(0o755)


@dataclass(frozen=True)
class _Out:
    variant: Variant
    out: Path
    key: str


@dataclass(frozen=True)
class _Base:
    """The default example a variant is derived from."""

    image: example.ExampleImage
    key: str
    version: str  # its commit's `version` metadata
    packages: dict[str, str]
    tree_bytes: int


def _base(arch: Arch, output: Path) -> _Base:
    image = example.build_example(arch, output=output)
    manifest = example.example_manifest(image)
    version = run.run(
        ["ostree", f"--repo={image.repo}", "show", "--print-metadata-key=version", image.commit]
    ).out.strip()
    return _Base(
        image=image,
        key=str(manifest["key"]),
        version=version.strip("'"),  # printed as a GVariant string
        packages=dict(manifest["packages"]),
        tree_bytes=int(manifest["tree_bytes"]),
    )


def _check_host() -> None:
    if not run.is_root():
        raise NeedsRoot(
            "building the Secure Boot example needs root (files owned by root, ostree commit)",
            hint="run it as root",
        )
    for tool in ("ostree", "apt-get", "dpkg-deb"):
        run.require(tool)


def _overlay(work: Path, arch: Arch, base: _Base) -> tuple[Path, dict[str, str]]:
    """What the variants add to the default example, as a directory laid over its commit: the signed
    binaries (from Debian's packages, unpacked, no maintainer script) where place_payload takes them, and
    the self-test. Returns the directory and the unpacked packages' versions (`package:arch`)."""
    wanted = read_packages(arch)
    hint = "the signed packages come from the Debian archive the host's apt uses; check the network or proxy"
    debs = debfetch.download(arch, example.read_sources(), wanted, work / "apt", work / "debs", hint=hint)
    overlay = work / "overlay"
    for deb in debs:
        debfetch.unpack(deb, work / "unpacked")
    # Only the signed EFI binaries: nothing else of these packages is used, and dpkg never sees them.
    for src_dir in ("usr/lib/shim", SIGNED_GRUB_DIR[arch]):
        dest = overlay / src_dir
        dest.mkdir(parents=True)
        for src in sorted((work / "unpacked" / src_dir).glob("*.efi.signed")):
            shutil.copy2(src, dest / src.name)
    selftest = overlay / SELFTEST
    selftest.parent.mkdir(parents=True, exist_ok=True)
    original = run.run(["ostree", f"--repo={base.image.repo}", "cat", base.image.commit, f"/{SELFTEST}"])
    selftest.write_bytes(original.stdout)
    selftest.chmod(0o755)  # as in the commit (ostree ls: -00755 0 0)
    install_selftest(overlay)  # moves it to imgbuild-selftest.base
    # Directories of the overlay replace those of the commit in the result: give them the commit's
    # metadata (root:root 0755 in the example; mkdtemp made the top 0700).
    for path in (overlay, *(p for p in overlay.rglob("*") if p.is_dir())):
        path.chmod(0o755)
    return overlay, {deb.key: deb.version for deb in debs}


def _file_bytes(tree: Path) -> int:
    return sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())


def _build(arch: Arch, base: _Base, stale: list[_Out]) -> None:
    """The variants of `arch` derived from the default example's commit: its objects are imported into
    the variant's repository and the overlay is committed on top (`--tree=ref` then `--tree=dir`), so
    nothing of the 400 MB tree is checked out or hashed again."""
    started = time.monotonic()
    with example._workdir() as work:
        log.info("deriving the %s Secure Boot example from the default example", arch.value)
        overlay, unpacked = _overlay(work, arch, base)
        packages = base.packages | unpacked
        for item in stale:
            item.out.mkdir(parents=True, exist_ok=True)
            place_payload(overlay, arch, item.variant, packages)
            size = base.tree_bytes + _file_bytes(overlay)
            commit = _commit(item.out / "repo", overlay, item.variant, arch, base, item.key)
            # The next variant starts from the bare overlay: no directory of this layout is left behind
            # (usr/lib/bootupd and usr/lib/ostree-boot are not in the default example).
            shutil.rmtree(overlay / "/".join(item.variant.payload_dir.split("/")[:3]))
            manifest = {
                "format": CACHE_FORMAT,
                "variant": item.variant.value,
                "key": item.key,
                "arch": arch.value,
                "commit": commit,
                "kernel": base.image.kernel,
                "ref": variant_ref(item.variant, arch),
                "payload": item.variant.payload_dir,
                "dpkg_dir": example.DPKG_DIR,
                "base": {"commit": base.image.commit, "key": base.key},
                "tree_bytes": size,
                "packages": packages,
                "unpacked": unpacked,
                "build_seconds": round(time.monotonic() - started, 1),
            }
            example._write_manifest(item.out / example.MANIFEST_NAME, manifest)


def _commit(repo: Path, overlay: Path, variant: Variant, arch: Arch, base: _Base, key: str) -> str:
    ref = variant_ref(variant, arch)
    if not (repo / "config").exists():
        run.run(["ostree", f"--repo={repo}", "init", "--mode=archive"])
    # Same repository mode and file system: ostree imports the objects as hard links.
    run.run(["ostree", f"--repo={repo}", "pull-local", base.image.repo, base.image.commit])
    run.run(
        [
            "ostree",
            f"--repo={repo}",
            "commit",
            f"--branch={ref}",
            f"--tree=ref={base.image.commit}",
            f"--tree=dir={overlay}",
            "--parent=none",
            f"--subject=Debian 12 imgbuild example, {variant.value} ({arch.value})",
            f"--add-metadata-string=version={base.version}",
            "--add-metadata=ostree.bootable=true",
            f"--add-metadata-string=ostree.linux={base.image.kernel}",
            f"--add-metadata-string=imgbuild.example.key={key}",
        ]
    )
    run.run(["ostree", f"--repo={repo}", "prune", "--refs-only", "--depth=0"])
    return run.run(["ostree", f"--repo={repo}", "rev-parse", ref]).out.strip()


def _repo_commit(repo: Path, variant: Variant, arch: Arch) -> str | None:
    if not (repo / "config").exists():
        return None
    done = run.run(["ostree", f"--repo={repo}", "rev-parse", variant_ref(variant, arch)], check=False)
    return done.out.strip() if done.returncode == 0 else None


def build_variant(
    variant: Variant, arch: Arch, *, output: Path | None = None, force: bool = False
) -> example.ExampleImage:
    """Build (or reuse) the Secure Boot variant `variant` of the example for `arch`."""
    base_dir = (output or paths.examples_dir()).resolve()
    # The default example first (built or reused under its own lock): the variants are derived from it.
    base = _base(arch, base_dir)
    recipe = recipe_digest()
    archive = example.archive_state()
    with example._locked(base_dir / "secureboot" / f".{arch.value}.lock"):
        states = {}
        for each in Variant:
            out = base_dir / each.value / arch.value
            key = cache_key(each, arch, recipe, archive, base.key, base.image.commit)
            manifest = example._read_manifest(out / example.MANIFEST_NAME)
            fresh = (
                manifest is not None
                and manifest.get("key") == key
                and _repo_commit(out / "repo", each, arch) == manifest.get("commit")
            )
            states[each] = (_Out(each, out, key), fresh)
        stale = []
        if force or not states[variant][1]:
            # The other stale variants come along: the packages are downloaded once per architecture.
            stale = [item for each, (item, fresh) in states.items() if each is variant or not fresh]
        cached = not stale
        if stale:
            _check_host()
            _build(arch, base, stale)
        out = base_dir / variant.value / arch.value
        manifest_path = out / example.MANIFEST_NAME
        data: dict[str, Any] = example._read_manifest(manifest_path) or {}
        dest = out / archive_name(variant, arch)
        encapsulator = example.encapsulator_digest()
        if (
            data.get("encapsulator") != encapsulator
            or data.get("commit") != data.get("encapsulated")
            or (not dest.is_file())
        ):
            cached = False
            started = time.monotonic()
            data["manifest_digest"] = example._encapsulate(out / "repo", str(data["commit"]), arch, dest)
            data["encapsulator"] = encapsulator
            data["encapsulated"] = data["commit"]
            data["encapsulate_seconds"] = round(time.monotonic() - started, 1)
            data["archive_bytes"] = dest.stat().st_size
            example._write_manifest(manifest_path, data)
    return example.ExampleImage(
        reference=f"oci-archive:{dest}",
        path=dest,
        commit=str(data["commit"]),
        kernel=str(data["kernel"]),
        arch=arch,
        cached=cached,
        repo=out / "repo",
        ref=variant_ref(variant, arch),
    )
