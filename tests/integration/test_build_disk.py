"""x86_64 disk images built from the example OS: every check a careful user would make, without booting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder import run
from builder.devices import loop_device, mounted
from builder.example import ExampleImage
from builder.plan import BIOS_BOOT_GUID, ESP_GUID, XBOOTLDR_GUID
from tests.imagebuilds import ImageBuilds, imgbuild, leaked_resources, partitions, raw_copy, sha256_file


@pytest.mark.parametrize("fmt", ["qcow2", "raw"])
def test_disk_checks(fmt: str, example_x86_64: ExampleImage, images: ImageBuilds, tmp_path: Path) -> None:
    built = images.get(fmt, example_x86_64.reference)
    record = built.result["outputs"][0]
    assert record["format"] == fmt and record["sha256"] == sha256_file(built.image)
    info = json.loads(run.run(["qemu-img", "info", "--output=json", built.image]).out)
    # Sized to the content (root: content + half + 1 GiB), not the old fixed 10 GiB.
    size = built.stage_options("disk.partition")["size"]
    assert info["format"] == fmt and info["virtual-size"] == size and size < 5 << 30
    if fmt == "qcow2":
        run.run(["qemu-img", "check", built.image])
        assert info["format-specific"]["data"]["compat"] == "1.1"
    with raw_copy(built.image, tmp_path) as raw:
        sgdisk = run.run(["sgdisk", "-v", raw]).out
        assert "No problems found" in sgdisk, sgdisk
        parts = partitions(raw)
        assert [p.type_guid for p in parts[:3]] == [BIOS_BOOT_GUID, ESP_GUID, XBOOTLDR_GUID]
        esp, boot, root = parts[1], parts[2], parts[3]
        esp_file = tmp_path / "esp.img"
        run.run(
            [
                "dd",
                f"if={raw}",
                f"of={esp_file}",
                "bs=1M",
                f"skip={esp.start >> 20}",
                f"count={esp.size >> 20}",
                "conv=sparse",
                "status=none",
            ]
        )
        run.run(["fsck.vfat", "-n", esp_file])
        assert "EFI/BOOT/BOOTX64.EFI" in run.run(
            ["mdir", "-/", "-b", "-i", esp_file, "::/EFI/BOOT"]
        ).out.upper().replace("::/", "")
        for part in (boot, root):
            with loop_device(raw, offset=part.start, size=part.size, read_only=True) as dev:
                run.run(["fsck.ext4", "-n", "-f", dev])
        (tmp_path / "root").mkdir()
        with (
            loop_device(raw, offset=root.start, size=root.size, read_only=True) as dev,
            mounted(dev, tmp_path / "root", fstype="ext4", options=["ro"]) as mnt,
        ):
            run.run(["ostree", "fsck", f"--repo={mnt}/ostree/repo"])
            commit = built.result["commit"]
            deploy_dir = mnt / "ostree/deploy/default/deploy" / f"{commit}.0"
            assert deploy_dir.is_dir()
            origin = (mnt / "ostree/deploy/default/deploy" / f"{commit}.0.origin").read_text()
            assert f"container-image-reference=ostree-unverified-image:{example_x86_64.reference}" in origin
            config = run.run(["ostree", f"--repo={mnt}/ostree/repo", "config", "get", "sysroot.readonly"]).out
            assert config.strip() == "true"
            units = deploy_dir / "etc/systemd/system"
            assert (units / "boot.mount").is_file() and (units / "boot-efi.mount").is_file()
    assert leaked_resources(built.output) == []


def test_plan_then_build_matches(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    manifest = tmp_path / "plan.json"
    imgbuild(["plan", "raw", example_x86_64.reference, "-o", manifest])
    again = imgbuild(["plan", "raw", example_x86_64.reference, "--output-format", "json"]).out
    assert manifest.read_text() == again
    out = tmp_path / "out"
    imgbuild(["build", manifest, "--output", out, "--progress", "json"])
    assert json.loads((out / "manifest.json").read_text()) == json.loads(manifest.read_text())


def test_manifest_with_a_wrong_option_is_refused(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    manifest = tmp_path / "plan.json"
    imgbuild(["plan", "qcow2", example_x86_64.reference, "-o", manifest])
    doc = json.loads(manifest.read_text())
    doc["pipelines"][0]["stages"][1]["options"]["size"] = -5
    manifest.write_text(json.dumps(doc))
    result = imgbuild(["build", manifest, "--output", tmp_path / "out"], check=False)
    assert result.returncode == 2
    err = result.stderr.decode()
    assert "pipelines[0].stages[1].options.size" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []
