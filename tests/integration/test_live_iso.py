"""The live-iso target from the example OS: what the medium holds and how it is laid out, read back with
xorriso, sfdisk, mtools and unsquashfs (tests/vm/test_live_iso_boot.py boots the same builds), and the
refusal of an image whose initramfs cannot boot live."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from builder import run
from builder.example import SELFTEST_KARG, ExampleImage
from builder.iso import medium
from tests.helpers_oci import TarWriter, add_gzip_layer, unpack_oci_archive, write_blob
from tests.imagebuilds import ROOT, Built, ImageBuilds, imgbuild, leaked_resources

BLUEPRINT = ROOT / "tests/data/live-iso-selftest.toml"
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


def live_iso(images: ImageBuilds, example: ExampleImage) -> Built:
    """One build per arch and session, shared with the boot tests."""
    return images.get("live-iso", example.reference, "--blueprint", str(BLUEPRINT))


def extract(iso: Path, path: str, dest: Path) -> Path:
    run.run(["xorriso", "-osirrox", "on", "-indev", iso, "-extract", path, dest])
    return dest


def test_x86_64_live_iso(example_x86_64: ExampleImage, images: ImageBuilds, tmp_path: Path) -> None:
    built = live_iso(images, example_x86_64)
    iso = built.target_file("live-iso")
    entry = built.result["outputs"][0]
    assert entry["format"] == "iso" and entry["target"] == "live-iso" and entry["arch"] == "x86_64"
    assert entry["volume_id"] == "debian-12-live-x86_64"
    assert entry["boot_modes"] == ["bios", "uefi"]
    report = medium.report_el_torito(iso)
    assert medium.boot_images(iso) == {"BIOS", "UEFI"}, report
    pvd = medium.read_pvd(iso)
    assert pvd == {
        "volume_id": "debian-12-live-x86_64",
        "application_id": "IMGBUILD EXAMPLE LIVE",
        "publisher": "IMGBUILD TESTS",
    }
    # Written to a USB stick: a GPT whose ESP holds the UEFI GRUB.
    table = json.loads(run.run(["sfdisk", "--json", iso]).out)["partitiontable"]
    (esp,) = [p for p in table["partitions"] if p["type"].upper() == ESP_GUID]
    loader = run.run(
        ["mcopy", "-n", "-i", f"{iso}@@{esp['start'] * 512}", "::/EFI/BOOT/BOOTX64.EFI", "-"],
        env={"MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    assert loader[:2] == b"MZ"
    cfg = extract(iso, "/boot/grub/grub.cfg", tmp_path / "grub.cfg").read_text()
    linux = next(line for line in cfg.splitlines() if line.strip().startswith("linux "))
    assert "root=live:CDLABEL=debian-12-live-x86_64 rd.live.image" in linux
    assert SELFTEST_KARG in linux and "ostree=/ostree/boot.1/" in linux
    assert "console=ttyS0,115200n8" in linux and "systemd.mask=boot.mount" in linux
    assert "root=UUID=" not in linux
    # The squashfs holds the root filesystem image that dmsquash-live snapshots.
    squashfs = extract(iso, "/LiveOS/squashfs.img", tmp_path / "squashfs.img")
    assert entry["squashfs_size"] == squashfs.stat().st_size
    listing = run.run(["unsquashfs", "-l", "-d", "", squashfs]).out.split()
    assert "/LiveOS/rootfs.img" in listing
    run.run(["unsquashfs", "-q", "-n", "-d", tmp_path / "sq", squashfs])
    rootfs = tmp_path / "sq/LiveOS/rootfs.img"
    root_uuid = built.stage_options("ostree.deploy")["kernel_args"][0].removeprefix("root=UUID=")
    assert f'UUID="{root_uuid}"' in run.run(["blkid", "-p", rootfs]).out
    assert leaked_resources(built.output) == []


def test_aarch64_live_iso_is_uefi_only(
    example_aarch64: ExampleImage, images: ImageBuilds, tmp_path: Path
) -> None:
    built = live_iso(images, example_aarch64)
    iso = built.target_file("live-iso")
    entry = built.result["outputs"][0]
    assert entry["arch"] == "aarch64" and entry["boot_modes"] == ["uefi"]
    assert medium.boot_images(iso) == {"UEFI"}, medium.report_el_torito(iso)
    assert medium.read_pvd(iso)["volume_id"] == "debian-12-live-aarch64"
    table = json.loads(run.run(["sfdisk", "--json", iso]).out)["partitiontable"]
    (esp,) = [p for p in table["partitions"] if p["type"].upper() == ESP_GUID]
    loader = run.run(
        ["mcopy", "-n", "-i", f"{iso}@@{esp['start'] * 512}", "::/EFI/BOOT/BOOTAA64.EFI", "-"],
        env={"MTOOLS_SKIP_CHECK": "1"},
    ).stdout
    assert loader[:2] == b"MZ"
    cfg = extract(iso, "/boot/grub/grub.cfg", tmp_path / "grub.cfg").read_text()
    assert "console=ttyAMA0,115200n8" in cfg


def _newc_without_live(tmp_path: Path) -> bytes:
    """A gzip'd initramfs with a systemd but no dmsquash-live: what the example had before dracut-live."""
    tree = tmp_path / "initramfs"
    (tree / "usr/lib/systemd").mkdir(parents=True)
    (tree / "usr/lib/systemd/systemd").write_bytes(b"not a live initramfs")
    listing = b".\n./usr\n./usr/lib\n./usr/lib/systemd\n./usr/lib/systemd/systemd\n"
    return gzip.compress(run.run(["cpio", "-o", "-H", "newc", "--quiet"], input=listing, cwd=tree).stdout)


def _derive(example: ExampleImage, tmp_path: Path, files: dict[str, bytes]) -> Path:
    """The example with one more layer (as `FROM example` + `COPY` would make): an OCI layout."""
    layout = unpack_oci_archive(example.path, tmp_path / "layout")
    index = json.loads((layout / "index.json").read_text())
    blobs = layout / "blobs/sha256"
    manifest: dict[str, Any] = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    config: dict[str, Any] = json.loads((blobs / manifest["config"]["digest"][7:]).read_text())
    layer = TarWriter()
    for name, data in files.items():
        layer.file(name, data)
    blob = add_gzip_layer(layout, layer.bytes())
    config["rootfs"]["diff_ids"].append(blob.diff_id)
    config.setdefault("history", []).append({"created_by": "test: replace the initramfs"})
    config_bytes = json.dumps(config).encode()
    manifest["config"] = {
        **manifest["config"],
        "digest": write_blob(layout, config_bytes),
        "size": len(config_bytes),
    }
    manifest["layers"].append(
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob.digest, "size": blob.size}
    )
    manifest_bytes = json.dumps(manifest).encode()
    entry = dict(index["manifests"][0])
    entry.update(digest=write_blob(layout, manifest_bytes), size=len(manifest_bytes))
    entry.pop("annotations", None)
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    assert hashlib.sha256(manifest_bytes).hexdigest() == entry["digest"][7:]
    return layout


def test_image_without_dmsquash_live_is_refused(
    example_x86_64: ExampleImage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    initramfs = f"usr/lib/modules/{example_x86_64.kernel}/initramfs.img"
    layout = _derive(example_x86_64, tmp_path, {initramfs: _newc_without_live(tmp_path)})
    out = tmp_path / "out"
    result = imgbuild(["live-iso", f"oci:{layout}", "--output", out], check=False)
    err = result.stderr.decode()
    assert result.returncode == 2, err
    refusals = [line for line in err.splitlines() if line.startswith("imgbuild: error: the image cannot")]
    assert refusals == [
        "imgbuild: error: the image cannot boot from a live ISO: its initramfs has no dracut dmsquash-live "
        "module "
        "(no usr/sbin/dmsquash-live-root, usr/lib/systemd/system-generators/dracut-dmsquash-generator)"
    ], err
    assert "disk.partition" not in err  # refused right after the import, before any stage ran
    assert "dracut-live" in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())
    assert leaked_resources(tmp_path) == []
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
