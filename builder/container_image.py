"""`make container`: the imgbuild container image, made from Debian packages without pulling a base image.

mmdebstrap makes a Debian 12 root filesystem with imgbuild's run-time packages (ci/container/packages.txt)
as a tar; imgbuild itself goes in from its wheel (built from this checkout) and the entrypoint
(ci/container/entrypoint) prepares loop devices and the host's containers-storage before running imgbuild.
imgbuild's own OCI writer turns the tar into a one-layer image with every date set to SOURCE_DATE_EPOCH,
written as an oci-archive; `--load` copies it into containers-storage for podman.

Reproducible where the tools allow: mmdebstrap's tar is reproducible for the same package versions and
SOURCE_DATE_EPOCH (it clamps mtimes and removes the files that differ per run), the layer's gzip and the
config carry no run-dependent data, and the Python byte code is compiled with hash-based invalidation. The
package versions come from the Debian archive of the moment: the cache key holds the archive's InRelease
files, as the example OS's does, so the same key means the same inputs.

A checkout-only tool (like the example OS): it needs the source tree to build the wheel.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from builder import __version__, paths, run
from builder.arch import Arch
from builder.errors import ImgbuildError, NeedsRoot
from builder.example import _locked, archive_state, read_sources
from builder.oci.writer import OciLayoutWriter, canonical_json, read_chunks, write_archive

log = logging.getLogger(__name__)

RECIPE_DIR = paths.PROJECT_ROOT / "ci" / "container"
ENTRYPOINT = "/usr/libexec/imgbuild/entrypoint"
ARCHIVE_NAME = "imgbuild-container.ociarchive"
DEFAULT_TAG = "localhost/imgbuild:latest"
CACHE_FORMAT = "imgbuild-container-1"
# Inside the container: outputs go to /output (imgbuild's default ./output, from /), the cache to a path a
# volume can be mounted on.
CONTAINER_ENV = (
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "IMGBUILD_CACHE=/var/cache/imgbuild",
    "LC_ALL=C.UTF-8",
)
SOURCE_SUFFIXES = (".py", ".json", ".toml", ".yaml", ".service", ".sh")


@dataclass(frozen=True)
class ContainerImage:
    archive: Path  # the oci-archive
    digest: str  # manifest digest
    config_digest: str  # the image ID podman shows
    key: str
    cached: bool


def _source_files() -> list[Path]:
    """What goes into the wheel, plus the container recipe and this module."""
    files = [paths.PROJECT_ROOT / "pyproject.toml", paths.PROJECT_ROOT / "README.md"]
    for top in ("builder", "targets", "blueprints"):
        files += [
            p
            for p in (paths.PROJECT_ROOT / top).rglob("*")
            if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts
        ]
    files += [p for p in RECIPE_DIR.rglob("*") if p.is_file()]
    return sorted(set(files))


def source_date_epoch() -> int:
    env = os.environ.get("SOURCE_DATE_EPOCH")
    if env:
        return int(env)
    # The date of the last commit that changed an input: the same sources give the same dates (and cache
    # key) without anyone setting anything, whatever else was committed since.
    inputs = ["pyproject.toml", "README.md", "builder", "targets", "blueprints", "ci/container"]
    done = run.run(["git", "-C", paths.PROJECT_ROOT, "log", "-1", "--format=%ct", "--", *inputs], check=False)
    return int(done.out.strip()) if done.returncode == 0 and done.out.strip() else 0


def cache_key(epoch: int) -> str:
    h = hashlib.sha256(f"{CACHE_FORMAT}\0{epoch}\0".encode())
    for path in _source_files():
        h.update(f"{path.relative_to(paths.PROJECT_ROOT)}\0{path.stat().st_mode & 0o111:o}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for url, digest in archive_state():
        h.update(f"{url}\0{digest}\0".encode())
    return h.hexdigest()


def packages() -> list[str]:
    lines = (RECIPE_DIR / "packages.txt").read_text().splitlines()
    return [word for line in lines for word in line.split("#", 1)[0].split()]


def _build_wheel(dest: Path) -> Path:
    run.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dest, "."],
        cwd=paths.PROJECT_ROOT,
        env={"PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        hint="building imgbuild's wheel needs setuptools (make setup)",
    )
    (wheel,) = dest.glob("imgbuild-*.whl")
    return wheel


def mmdebstrap_argv(wheel: Path, target: Path) -> list[str]:
    site = "/usr/lib/python3/dist-packages"
    wheel_q, entry_q = shlex.quote(str(wheel)), shlex.quote(str(RECIPE_DIR / "entrypoint"))
    script = "#!/usr/bin/python3\\nimport sys\\nfrom builder.cli import main\\nsys.exit(main())\\n"
    hooks = [
        # imgbuild from its wheel (a zip): the Debian packages above are its dependencies.
        f'/usr/bin/python3 -m zipfile -e {wheel_q} "$1{site}"',
        f'/usr/bin/python3 -m compileall -q --invalidation-mode checked-hash -d {site} "$1{site}/builder" '
        f'"$1{site}/targets" "$1{site}/blueprints"',
        f'printf \'{script}\' > "$1/usr/bin/imgbuild" && chmod 0755 "$1/usr/bin/imgbuild"',
        f'install -D -m 0755 {entry_q} "$1{ENTRYPOINT}"',
        'mkdir -p "$1/output" "$1/var/cache/imgbuild" "$1/var/lib/containers/storage"',
        # Written by mmdebstrap from the host; podman provides its own.
        'rm -f "$1/etc/resolv.conf" "$1/etc/hostname"',
    ]
    return [
        "mmdebstrap",
        "--mode=root",
        "--format=tar",
        "--variant=minbase",
        f"--arch={Arch.host().debian}",
        f"--include={','.join(packages())}",
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        '--aptopt=APT::Install-Recommends "false"',
        "--dpkgopt=path-exclude=/usr/share/doc/*",
        "--dpkgopt=path-include=/usr/share/doc/*/copyright",
        "--dpkgopt=path-exclude=/usr/share/man/*",
        "--dpkgopt=path-exclude=/usr/share/info/*",
        "--dpkgopt=path-exclude=/usr/share/locale/*",
        # podman gives the container its own /dev.
        "--skip=output/dev",
        *(f"--customize-hook={hook}" for hook in hooks),
        "bookworm",
        str(target),
        *read_sources(),
    ]


def _config(diff_id: str, epoch: int) -> bytes:
    created = datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "created": created,
        "architecture": Arch.host().oci,
        "os": "linux",
        "config": {
            "Entrypoint": [ENTRYPOINT],
            "Cmd": ["--help"],
            "Env": list(CONTAINER_ENV),
            "WorkingDir": "/",
            "Volumes": {"/output": {}, "/var/cache/imgbuild": {}},
            "Labels": {
                "org.opencontainers.image.title": "imgbuild",
                "org.opencontainers.image.version": __version__,
                "org.opencontainers.image.created": created,
            },
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {"created": created, "created_by": "imgbuild make container: mmdebstrap bookworm + wheel"}
        ],
    }
    return canonical_json(config)


def _write_image(rootfs_tar: Path, layout: Path, archive: Path, epoch: int) -> tuple[str, str]:
    writer = OciLayoutWriter(layout)
    layer = writer.layer()
    for chunk in read_chunks(rootfs_tar):
        layer.write(chunk)
    descriptor, diff_id = layer.finish()
    config = _config(diff_id, epoch)
    manifest = writer.add_manifest(config, [descriptor], {})
    writer.tag(manifest, "latest")
    write_archive(layout, archive)
    return manifest.digest, f"sha256:{hashlib.sha256(config).hexdigest()}"


def build(output: Path | None = None, *, force: bool = False) -> ContainerImage:
    """Build (or reuse) the container image; the oci-archive and its record go to `output`."""
    if not run.is_root():
        raise NeedsRoot("building the container image needs root (mmdebstrap --mode=root)")
    if not RECIPE_DIR.is_dir():
        raise ImgbuildError(
            "the container image is built from a checkout of imgbuild", hint="run `make container` in a clone"
        )
    out = (output or paths.PROJECT_ROOT / ".cache" / "container").resolve()
    epoch = source_date_epoch()
    with _locked(out / ".lock"):
        key = cache_key(epoch)
        record_path = out / "manifest.json"
        archive = out / ARCHIVE_NAME
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        if not force and record.get("key") == key and archive.exists():
            return ContainerImage(archive, record["digest"], record["config"], key, cached=True)
        with tempfile.TemporaryDirectory(prefix="build-", dir=out) as tmp:
            work = Path(tmp)
            wheel = _build_wheel(work / "dist")
            rootfs = work / "rootfs.tar"
            log.info("building the container's root filesystem with mmdebstrap (a few minutes)")
            run.run(mmdebstrap_argv(wheel, rootfs), env={"SOURCE_DATE_EPOCH": str(epoch)}, capture=False)
            digest, config = _write_image(rootfs, work / "layout", archive, epoch)
        record = {"format": CACHE_FORMAT, "key": key, "digest": digest, "config": config, "epoch": epoch}
        tmp_record = record_path.with_name(".manifest.json.tmp")
        tmp_record.write_text(json.dumps(record, indent=2) + "\n")
        tmp_record.replace(record_path)
        return ContainerImage(archive, digest, config, key, cached=False)


def load(image: ContainerImage, tag: str = DEFAULT_TAG) -> None:
    """Copy the image into containers-storage (for `podman run`)."""
    run.run(["skopeo", "copy", "--quiet", f"oci-archive:{image.archive}", f"containers-storage:{tag}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m builder.container_image", description=__doc__)
    parser.add_argument("--output", type=Path, help="default: .cache/container in the checkout")
    parser.add_argument("--force", action="store_true", help="rebuild even when the cached image is current")
    parser.add_argument(
        "--load", metavar="TAG", nargs="?", const=DEFAULT_TAG, help="copy into containers-storage"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        image = build(args.output, force=args.force)
        if args.load:
            load(image, args.load)
    except ImgbuildError as e:
        print(f"imgbuild: error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    print(f"oci-archive:{image.archive}")
    print(f"digest {image.digest} (image id {image.config_digest.removeprefix('sha256:')[:12]})")
    if args.load:
        print(f"containers-storage:{args.load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
