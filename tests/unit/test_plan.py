"""The planner: deterministic, golden-tested, and the layout rules it applies."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from builder.arch import Arch
from builder.blueprint import Blueprint, parse_blueprint
from builder.errors import BlueprintError, NotBootable, SecureBootUnavailable
from builder.facts import ImageFacts
from builder.manifest import loads
from builder.plan import GiB, MiB, PlanOptions, Rootfs, plan, root_size
from targets.platforms import Platform

COMPOSEFS_OFF_KARG = "ostree.prepare-root.composefs=0"
GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden"

FACTS = ImageFacts(
    reference="oci-archive:/srv/images/debian-ostree-x86_64.ociarchive:latest",
    origin="ostree-unverified-image:oci-archive:/srv/images/debian-ostree-x86_64.ociarchive:latest",
    digest="sha256:" + "ab" * 32,
    arch=Arch.X86_64,
    size=150 * MiB,
    commit="cd" * 32,
    kernel="6.1.0-28-amd64",
    grub_platforms=("i386-pc", "x86_64-efi"),
    grub_blscfg=False,
    efi_payload=None,
    selinux_policy=None,
    composefs_kargs=(),
    composefs_reason=None,
    image_kargs=(),
    os_name="Debian GNU/Linux 12 (bookworm)",
    content_size=400 * MiB,
    boot_chain="unsigned-grub",
    secure_boot_problems=(
        "the image ships no signed shim and GRUB: imgbuild builds an unsigned GRUB from its modules",
    ),
)

BLUEPRINT = """
name = "golden"
version = "1.0.0"

[customizations]
hostname = "golden"

[customizations.kernel]
append = "quiet loglevel=3"

[[customizations.filesystem]]
mountpoint = "/"
minsize = "4 GiB"

[[customizations.filesystem]]
mountpoint = "/var/log"
minsize = "512 MiB"
"""


def _bp(text: str = BLUEPRINT) -> Blueprint:
    return parse_blueprint(text, "toml", "test.toml")


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("IMGBUILD_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert text == path.read_text(), f"planner output differs from {path} (IMGBUILD_UPDATE_GOLDEN=1 rewrites)"


@pytest.mark.parametrize("target", ["qcow2", "raw"])
def test_golden_x86_64(target: str) -> None:
    _check_golden(f"plan-{target}-x86_64.yaml", plan(FACTS, _bp(), [target], PlanOptions()).dumps("yaml"))


def test_golden_aarch64_xfs() -> None:
    facts = replace(FACTS, arch=Arch.AARCH64, grub_platforms=("arm64-efi",))
    manifest = plan(facts, Blueprint.empty(), ["qcow2"], PlanOptions(rootfs=Rootfs.XFS))
    _check_golden("plan-qcow2-aarch64-xfs.yaml", manifest.dumps("yaml"))


def test_deterministic_and_reloadable() -> None:
    a = plan(FACTS, _bp(), ["qcow2"], PlanOptions())
    b = plan(FACTS, _bp(), ["qcow2"], PlanOptions())
    assert a.dumps("json") == b.dumps("json")
    assert loads(a.dumps("yaml")) == a
    assert loads(a.dumps("json")).stage_ids() == a.stage_ids()


def test_seed_changes_uuids_only() -> None:
    a = plan(FACTS, _bp(), ["qcow2"], PlanOptions(seed="one"))
    b = plan(FACTS, _bp(), ["qcow2"], PlanOptions(seed="two"))
    assert a.dumps() != b.dumps()
    assert [s.type for _, s in a.stages()] == [s.type for _, s in b.stages()]


def _stage(manifest_text: str, kind: str) -> dict[str, object]:
    manifest = loads(manifest_text)
    return next(dict(s.options) for _, s in manifest.stages() if s.type == kind)


def test_layout_x86_64() -> None:
    manifest = plan(FACTS, _bp(), ["qcow2"], PlanOptions())
    part = _stage(manifest.dumps(), "disk.partition")
    names = [p["name"] for p in part["partitions"]]  # type: ignore[attr-defined]
    assert names == ["bios", "esp", "boot", "var-log", "root"]
    sizes = {p["name"]: p["size"] for p in part["partitions"]}  # type: ignore[attr-defined]
    assert sizes == {"bios": MiB, "esp": 501 * MiB, "boot": GiB, "var-log": 512 * MiB, "root": None}
    assert part["size"] == FIXED + 512 * MiB + 4 * GiB  # the blueprint's / (4 GiB) beats 1792 MiB
    deploy = _stage(manifest.dumps(), "ostree.deploy")
    kargs = deploy["kernel_args"]
    assert kargs[:2][1] == "rw" and str(kargs[0]).startswith("root=UUID=")  # type: ignore[index]
    assert "console=ttyS0,115200n8" in kargs and kargs[-2:] == ["quiet", "loglevel=3"]  # type: ignore[operator,index]
    assert deploy["origin"] == FACTS.origin


FIXED = MiB + 501 * MiB + GiB + 2 * MiB  # bios, esp, /boot and the GPT


def test_disk_fits_the_content() -> None:
    # 400 MiB of content + half of it + 1 GiB = 1624 MiB, rounded up to 256 MiB: 1792 MiB of root.
    assert root_size(FACTS) == 1792 * MiB
    part = _stage(plan(FACTS, Blueprint.empty(), ["raw"], PlanOptions()).dumps(), "disk.partition")
    assert part["size"] == FIXED + 1792 * MiB
    big = replace(FACTS, content_size=6 * GiB)
    part = _stage(plan(big, Blueprint.empty(), ["raw"], PlanOptions()).dumps(), "disk.partition")
    assert part["size"] == FIXED + 10 * GiB  # 6 + 3 + 1 GiB
    # Facts without a content size: the layers' size times the compression guess.
    unknown = replace(FACTS, content_size=0, size=GiB)
    assert root_size(unknown) == 3 * GiB + GiB + 512 * MiB + GiB


def test_given_sizes_win_when_larger() -> None:
    part = _stage(
        plan(FACTS, Blueprint.empty(), ["raw"], PlanOptions(size=20 * GiB)).dumps(), "disk.partition"
    )
    assert part["size"] == 20 * GiB
    small = _stage(plan(FACTS, Blueprint.empty(), ["raw"], PlanOptions(size=GiB)).dumps(), "disk.partition")
    assert small["size"] == FIXED + 1792 * MiB  # grown: the content must fit
    text = plan(FACTS, _bp(), ["raw"], PlanOptions()).dumps()  # the blueprint asks 4 GiB for /
    assert _stage(text, "disk.partition")["size"] == FIXED + 512 * MiB + 4 * GiB


@pytest.mark.parametrize(("target", "unit"), [("gce", GiB), ("ami", GiB), ("vhd", MiB), ("qcow2", MiB)])
def test_disk_size_alignment_of_the_target(target: str, unit: int) -> None:
    part = _stage(plan(FACTS, Blueprint.empty(), [target], PlanOptions()).dumps(), "disk.partition")
    assert part["size"] % unit == 0 and part["size"] >= FIXED + 1792 * MiB  # type: ignore[operator]


def test_aarch64_has_no_bios_partition_and_uses_ttyAMA0() -> None:
    facts = replace(FACTS, arch=Arch.AARCH64, grub_platforms=("arm64-efi",))
    text = plan(facts, Blueprint.empty(), ["qcow2"], PlanOptions()).dumps()
    names = [p["name"] for p in _stage(text, "disk.partition")["partitions"]]  # type: ignore[attr-defined]
    assert names == ["esp", "boot", "root"]
    assert "console=ttyAMA0,115200n8" in _stage(text, "ostree.deploy")["kernel_args"]  # type: ignore[operator]
    grub = _stage(text, "bootloader.grub")
    assert "bios" not in grub and grub["efi"] == {
        "partition": "esp",
        "source": "grub-mkimage",
        "platform": "arm64-efi",
    }


def test_composefs_and_selinux_and_blscfg() -> None:
    facts = replace(
        FACTS,
        composefs_kargs=(COMPOSEFS_OFF_KARG,),
        composefs_reason="the image enables composefs",
        selinux_policy="targeted",
        grub_blscfg=True,
        efi_payload="usr/lib/bootupd/updates/EFI",
    )
    text = plan(facts, Blueprint.empty(), ["qcow2"], PlanOptions()).dumps()
    deploy = _stage(text, "ostree.deploy")
    assert COMPOSEFS_OFF_KARG in deploy["kernel_args"]  # type: ignore[operator]
    assert deploy["notes"] == ["the image enables composefs"]
    assert _stage(text, "ostree.selinux")["policy"] == "targeted"
    grub = _stage(text, "bootloader.grub")
    assert grub["config"] == "blscfg" and grub["efi"]["source"] == "image"  # type: ignore[index]


def test_btrfs_boot_is_ext4_and_refuses_var_partitions() -> None:
    text = plan(FACTS, Blueprint.empty(), ["qcow2"], PlanOptions(rootfs=Rootfs.BTRFS)).dumps()
    mkfs = [dict(s.options) for _, s in loads(text).stages() if s.type == "fs.mkfs"]
    assert {m["partition"]: m["fstype"] for m in mkfs} == {"esp": "vfat", "boot": "ext4", "root": "btrfs"}
    with pytest.raises(BlueprintError, match="/var/log"):
        plan(FACTS, _bp(), ["qcow2"], PlanOptions(rootfs=Rootfs.BTRFS))


def test_unbootable_without_efi_on_aarch64() -> None:
    facts = replace(FACTS, arch=Arch.AARCH64, grub_platforms=())
    with pytest.raises(NotBootable):
        plan(facts, Blueprint.empty(), ["qcow2"], PlanOptions())


DISK_BLUEPRINT = """
name = "disk"
[[customizations.disk.partitions]]
type = "plain"
mountpoint = "/boot"
fs_type = "xfs"
minsize = "768 MiB"
[[customizations.disk.partitions]]
type = "plain"
fs_type = "swap"
minsize = "256 MiB"
label = "swap"
[[customizations.disk.partitions]]
type = "plain"
mountpoint = "/var/lib/data"
fs_type = "xfs"
label = "data"
minsize = "1 GiB"
part_label = "data"
part_uuid = "0D0A7A00-1111-4222-8333-444455556666"
[[customizations.disk.partitions]]
type = "plain"
mountpoint = "/"
fs_type = "ext4"
minsize = "5 GiB"
"""


def test_disk_customization_layout() -> None:
    text = plan(FACTS, _bp(DISK_BLUEPRINT), ["qcow2"], PlanOptions()).dumps()
    partitions = _stage(text, "disk.partition")["partitions"]
    assert [(p["name"], p["size"]) for p in partitions] == [  # type: ignore[attr-defined]
        ("bios", MiB),
        ("esp", 501 * MiB),
        ("boot", 768 * MiB),
        ("swap1", 256 * MiB),
        ("data", GiB),
        ("root", None),
    ]
    assert partitions[4]["uuid"] == "0d0a7a00-1111-4222-8333-444455556666"  # type: ignore[index]
    mkfs = {
        str(o["partition"]): o for _, s in loads(text).stages() if s.type == "fs.mkfs" for o in [s.options]
    }
    assert mkfs["boot"]["fstype"] == "xfs" and mkfs["swap1"]["fstype"] == "swap"
    assert mkfs["data"]["label"] == "data"
    deploy = _stage(text, "ostree.deploy")
    assert deploy["swap"] == [mkfs["swap1"]["uuid"]]
    assert [m["where"] for m in deploy["fstab"]] == ["/boot", "/boot/efi", "/var/lib/data"]  # type: ignore[attr-defined]
    assert {"partition": "boot", "target": "/boot", "fstype": "xfs"} in deploy["mounts"]  # type: ignore[operator]


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        (
            'type = "dos"\n[[customizations.disk.partitions]]\nmountpoint = "/"\nminsize = "5 GiB"',
            "type 'dos'",
        ),
        ('[[customizations.disk.partitions]]\nmountpoint = "/var/x"\nminsize = "5 GiB"', "no partition has"),
        (
            '[[customizations.disk.partitions]]\ntype = "lvm"\nminsize = "5 GiB"\n'
            '[[customizations.disk.partitions.logical_volumes]]\nmountpoint = "/"\nminsize = "4 GiB"',
            "type lvm",
        ),
    ],
)
def test_disk_customization_refusals(snippet: str, message: str) -> None:
    text = (
        'name = "d"\n[customizations.disk]\n' + snippet
        if snippet.startswith("type")
        else ('name = "d"\n' + snippet)
    )
    with pytest.raises(BlueprintError, match=message):
        plan(FACTS, _bp(text), ["qcow2"], PlanOptions())


def test_btrfs_subvolume_layout() -> None:
    text = (Path(__file__).parents[1] / "data/btrfs-subvolumes.toml").read_text()
    manifest = plan(FACTS, _bp(text), ["qcow2"], PlanOptions()).dumps()
    names = [p["name"] for p in _stage(manifest, "disk.partition")["partitions"]]  # type: ignore[attr-defined]
    assert names == ["bios", "esp", "boot", "root"]
    assert _stage(manifest, "fs.btrfs-subvolumes") == {"partition": "root", "subvolumes": ["root", "var-log"]}
    deploy = _stage(manifest, "ostree.deploy")
    assert deploy["mounts"][0] == {  # type: ignore[index]
        "partition": "root",
        "target": "/",
        "fstype": "btrfs",
        "options": ["subvol=root"],
    }
    assert "rootflags=subvol=root" in deploy["kernel_args"]  # type: ignore[operator]
    var_log = next(m for m in deploy["fstab"] if m["where"] == "/var/log")  # type: ignore[attr-defined]
    assert var_log["fstype"] == "btrfs" and var_log["options"] == "subvol=var-log"


def test_boot_cannot_be_a_btrfs_subvolume() -> None:
    text = (
        'name = "b"\n[[customizations.disk.partitions]]\ntype = "btrfs"\nminsize = "5 GiB"\n'
        '[[customizations.disk.partitions.subvolumes]]\nname = "root"\nmountpoint = "/"\n'
        '[[customizations.disk.partitions.subvolumes]]\nname = "boot"\nmountpoint = "/boot"\n'
    )
    with pytest.raises(BlueprintError, match="/boot cannot be a btrfs subvolume"):
        plan(FACTS, _bp(text), ["qcow2"], PlanOptions())


def test_golden_multi_output() -> None:
    """qcow2, vmdk, gce, ami of an image without Ignition: their platforms' settings agree, one pipeline."""
    manifest = plan(FACTS, _bp(), ["qcow2", "vmdk", "gce", "ami"], PlanOptions())
    assert [p.name for p in manifest.pipelines] == ["qemu-vmware-gcp-aws"]
    _check_golden("plan-multi-x86_64.yaml", manifest.dumps("yaml"))


def test_golden_multi_output_ignition() -> None:
    """With Ignition each platform needs its own ignition.platform.id: one deployment per platform."""
    facts = replace(FACTS, ignition=True)
    manifest = plan(facts, Blueprint.empty(), ["qcow2", "raw", "vhd"], PlanOptions())
    assert [p.name for p in manifest.pipelines] == ["qemu", "azure"]
    stages = [[s.type for s in p.stages] for p in manifest.pipelines]
    assert stages[0][-2:] == ["target.qcow2", "target.raw"] and stages[1][-1] == "target.vhd"
    assert [s.type for s in manifest.pipelines[1].stages].count("container.import") == 1
    deploys = [
        next(dict(s.options) for s in p.stages if s.type == "ostree.deploy") for p in manifest.pipelines
    ]
    assert "ignition.platform.id=qemu" in deploys[0]["kernel_args"]
    assert "ignition.platform.id=azure" in deploys[1]["kernel_args"]
    # The same import starts both pipelines: one stage id, one cache record.
    ids = manifest.stage_ids()
    assert ids[0] == ids[len(manifest.pipelines[0].stages)]
    _check_golden("plan-multi-ignition-x86_64.yaml", manifest.dumps("yaml"))


def test_platform_override_shares_one_deployment() -> None:
    facts = replace(FACTS, ignition=True)
    manifest = plan(facts, Blueprint.empty(), ["qcow2", "vhd"], PlanOptions(platform=Platform.AZURE))
    assert [p.name for p in manifest.pipelines] == ["azure"]
    targets = [dict(s.options) for s in manifest.pipelines[0].stages if s.type.startswith("target.")]
    assert [t["platform"] for t in targets] == ["azure", "azure"]


def test_blueprint_ignition_names_the_platform_once() -> None:
    text = 'name = "i"\n[customizations.ignition.firstboot]\nurl = "http://example.invalid/config.ign"\n'
    manifest = plan(FACTS, _bp(text), ["ami"], PlanOptions())
    kargs = next(dict(s.options) for _, s in manifest.stages() if s.type == "ostree.deploy")["kernel_args"]
    assert kargs.count("ignition.platform.id=aws") == 1 and "ignition.firstboot" in kargs
    assert not any(k == "ignition.platform.id=metal" for k in kargs)


def test_ami_records_boot_modes() -> None:
    x86 = next(
        dict(s.options)
        for _, s in plan(FACTS, Blueprint.empty(), ["ami"], PlanOptions()).stages()
        if s.type == "target.ami"
    )
    assert x86["boot_modes"] == ["bios", "uefi"]
    facts = replace(FACTS, arch=Arch.AARCH64, grub_platforms=("arm64-efi",))
    arm = next(
        dict(s.options)
        for _, s in plan(facts, Blueprint.empty(), ["ami"], PlanOptions()).stages()
        if s.type == "target.ami"
    )
    assert arm["boot_modes"] == ["uefi"]


@pytest.mark.parametrize("targets", [["qcow2"], ["live-iso"], ["iso"], ["live-iso", "iso"]])
def test_secure_boot_require_refuses_an_unsigned_chain_for_every_target(targets: list[str]) -> None:
    # The ISO targets boot the image's chain too (its shim and GRUB on the medium's ESP): the same refusal.
    with pytest.raises(SecureBootUnavailable) as err:
        plan(FACTS, _bp(), targets, PlanOptions(secure_boot=True))
    assert str(err.value) == (
        f"{FACTS.reference} cannot boot with Secure Boot: the image ships no signed shim and GRUB: imgbuild "
        "builds an unsigned GRUB from its modules"
    )
    assert err.value.hint


def test_secure_boot_require_plans_isos_of_a_signed_chain() -> None:
    signed = replace(
        FACTS,
        efi_payload="usr/lib/bootupd/updates/EFI",
        boot_chain="signed-shim-grub",
        secure_boot_problems=(),
    )
    manifest = plan(signed, _bp(), ["live-iso", "iso"], PlanOptions(secure_boot=True))
    assert "secure_boot: require" in manifest.dumps("yaml")
