"""Every output target written from the x86_64 example in one build, each checked by the tool that consumes
it (qemu-img, GNU tar, an XML parser, sha256sum), not by imgbuild's own checks."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from builder import run
from builder.example import ExampleImage
from tests.imagebuilds import Built, ImageBuilds, imgbuild, partitions, sha256_file

ALL = ("qcow2", "raw", "vmdk", "vhd", "gce", "ova", "ami")
MiB = 1 << 20
GiB = 1 << 30
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"


@pytest.fixture(scope="module")
def built(example_x86_64: ExampleImage, images: ImageBuilds) -> Built:
    return images.multi(ALL, example_x86_64.reference)


def _info(path: Path, fmt: str | None = None) -> dict[str, object]:
    argv = ["qemu-img", "info", "--output=json", *(["-f", fmt] if fmt else []), str(path)]
    data: dict[str, object] = json.loads(run.run(argv).out)
    return data


def _compare(a: Path, a_fmt: str, b: Path) -> None:
    """qemu-img reads the same disk content from `a` (as `a_fmt`) and the raw disk `b`."""
    run.run(["qemu-img", "compare", "-f", a_fmt, "-F", "raw", a, b])


def test_one_deployment_writes_every_target(built: Built) -> None:
    assert len(built.manifest["pipelines"]) == 1
    kinds = [s["type"] for s in built.manifest["pipelines"][0]["stages"]]
    assert kinds.count("ostree.deploy") == 1
    assert kinds[-len(ALL) :] == [f"target.{name}" for name in ALL]
    entries = built.result["outputs"]
    assert [e["target"] for e in entries] == list(ALL)
    for entry in entries:
        path = built.output / entry["path"]
        assert entry["size"] == path.stat().st_size and entry["sha256"] == sha256_file(path)
        assert entry["arch"] == "x86_64" and entry["format"]
    platforms = {e["target"]: e["platform"] for e in entries}
    assert platforms == {
        "qcow2": "qemu",
        "raw": "qemu",
        "vmdk": "vmware",
        "vhd": "azure",
        "gce": "gcp",
        "ova": "vmware",
        "ami": "aws",
    }


def test_disk_fits_the_content(built: Built) -> None:
    """Far below the old 10 GiB default: the content plus the margin, in whole GiB for GCE and EC2."""
    size = built.stage_options("disk.partition")["size"]
    assert size % GiB == 0 and size <= 6 * GiB
    assert _info(built.target_file("raw"))["virtual-size"] == size


def test_qcow2(built: Built) -> None:
    info = _info(built.target_file("qcow2"))
    assert info["format"] == "qcow2"
    run.run(["qemu-img", "check", "-f", "qcow2", built.target_file("qcow2")])
    _compare(built.target_file("qcow2"), "qcow2", built.target_file("raw"))


def test_vmdk_is_stream_optimized(built: Built) -> None:
    vmdk = built.target_file("vmdk")
    info = _info(vmdk)
    assert info["format"] == "vmdk"
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"  # type: ignore[index]
    _compare(vmdk, "vmdk", built.target_file("raw"))


def test_vhd_is_fixed_and_mib_aligned(built: Built) -> None:
    vhd = built.target_file("vhd")
    info = _info(vhd, "vpc")
    assert info["format"] == "vpc"
    size = int(info["virtual-size"])  # type: ignore[call-overload]
    assert size % MiB == 0
    # Fixed: the data is stored as it is, then the 512-byte footer (probed without a format, qemu sees raw).
    assert vhd.stat().st_size == size + 512
    assert _info(vhd)["format"] == "raw"
    with vhd.open("rb") as f:
        f.seek(-512, 2)
        footer = f.read(512)
    assert footer[:8] == b"conectix" and int.from_bytes(footer[60:64], "big") == 2  # disk type: fixed
    _compare(vhd, "vpc", built.target_file("raw"))


def test_gce_archive(built: Built, tmp_path: Path) -> None:
    archive = built.target_file("gce")
    listing = run.run(["tar", "-tvf", archive]).out.splitlines()
    assert len(listing) == 1 and listing[0].split()[-1] == "disk.raw"
    with tarfile.open(archive, "r:gz") as tar:
        (member,) = tar.getmembers()
        assert member.name == "disk.raw" and member.issparse()
        assert member.type == tarfile.GNUTYPE_SPARSE  # old GNU sparse member (oldgnu/gnu, not pax)
    header = _first_header(archive)
    assert header[257:265] == b"ustar  \0"  # GNU's magic, not POSIX's "ustar\0" "00"
    run.run(["tar", "-xSf", archive, "-C", tmp_path])
    disk = tmp_path / "disk.raw"
    assert disk.stat().st_blocks * 512 < disk.stat().st_size // 2, "extracted sparse"
    _compare(disk, "raw", built.target_file("raw"))


def _first_header(path: Path) -> bytes:
    """The first tar header of a .tar.gz, read with the gzip module."""
    with gzip.open(path, "rb") as f:
        return bytes(f.read(512))


def test_ova_order_descriptor_and_manifest(built: Built, tmp_path: Path) -> None:
    ova = built.target_file("ova")
    names = run.run(["tar", "-tf", ova]).out.split()
    assert names == ["disk.ovf", "disk.mf", "disk.vmdk"]
    run.run(["tar", "-xf", ova, "-C", tmp_path])
    # The manifest's checksums match, computed here and by sha256sum.
    lines = (tmp_path / "disk.mf").read_text().splitlines()
    sums = dict(line.removeprefix("SHA256(").split(")= ") for line in lines)
    assert set(sums) == {"disk.ovf", "disk.vmdk"}
    for name, digest in sums.items():
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == digest
    run.run(["sha256sum", "--check", "--strict", "disk.mf"], cwd=tmp_path)
    # The descriptor, parsed with expat, has what the OVF envelope schema (DSP8023) requires.
    root = ET.parse(tmp_path / "disk.ovf").getroot()
    assert root.tag == f"{OVF}Envelope"
    file = root.find(f"{OVF}References/{OVF}File")
    assert file is not None and file.get(f"{OVF}href") == "disk.vmdk" and file.get(f"{OVF}id")
    assert int(file.get(f"{OVF}size", "0")) == (tmp_path / "disk.vmdk").stat().st_size
    disk = root.find(f"{OVF}DiskSection/{OVF}Disk")
    assert disk is not None and root.find(f"{OVF}DiskSection/{OVF}Info") is not None
    assert disk.get(f"{OVF}fileRef") == file.get(f"{OVF}id")
    assert disk.get(f"{OVF}format", "").endswith("#streamOptimized")
    capacity = int(disk.get(f"{OVF}capacity", "0"))
    assert capacity == _info(tmp_path / "disk.vmdk")["virtual-size"]
    system = root.find(f"{OVF}VirtualSystem")
    assert system is not None and system.get(f"{OVF}id") and system.find(f"{OVF}Info") is not None
    os_section = system.find(f"{OVF}OperatingSystemSection")
    assert os_section is not None and os_section.get(f"{OVF}id") and os_section.find(f"{OVF}Info") is not None
    hardware = system.find(f"{OVF}VirtualHardwareSection")
    assert hardware is not None and hardware.find(f"{OVF}Info") is not None
    items = hardware.findall(f"{OVF}Item")
    for item in items:
        for required in ("ElementName", "InstanceID", "ResourceType"):
            assert item.find(f"{RASD}{required}") is not None
    disks = [i for i in items if i.findtext(f"{RASD}ResourceType") == "17"]
    assert [d.findtext(f"{RASD}HostResource") for d in disks] == [f"ovf:/disk/{disk.get(f'{OVF}diskId')}"]
    assert _info(tmp_path / "disk.vmdk")["format-specific"]["data"]["create-type"] == "streamOptimized"  # type: ignore[index]


def test_ami_disk_and_what_the_upload_needs(built: Built) -> None:
    entry = next(e for e in built.result["outputs"] if e["target"] == "ami")
    assert entry["disk"] == entry["path"] and entry["arch"] == "x86_64"
    assert entry["boot_modes"] == ["bios", "uefi"]
    disk = built.target_file("ami")
    assert disk.stat().st_size % GiB == 0  # an EBS volume of exactly this size
    types = {p.type_guid for p in partitions(disk)}
    assert "21686148-6449-6E6F-744E-656564454649" in types and "C12A7328-F81F-11D2-BA4B-00A0C93EC93B" in types
    assert sha256_file(disk) == sha256_file(built.target_file("raw"))


def test_three_types_plan_one_deployment(example_x86_64: ExampleImage, tmp_path: Path) -> None:
    """`imgbuild build --type qcow2 --type vmdk --type gce` deploys once: its manifest has one pipeline."""
    out = tmp_path / "plan.json"
    ref = example_x86_64.reference
    imgbuild(["plan", "--type", "qcow2", "--type", "vmdk", "--type", "gce", ref, "-o", out])
    manifest = json.loads(out.read_text())
    stages = [s["type"] for p in manifest["pipelines"] for s in p["stages"]]
    assert stages.count("ostree.deploy") == 1 and stages.count("disk.partition") == 1
    assert stages[-3:] == ["target.qcow2", "target.vmdk", "target.gce"]
