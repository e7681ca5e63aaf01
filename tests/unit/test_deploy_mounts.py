"""Mount units and fstab lines for the deployment (builder.ostree.mounts), written into a plain directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.ostree.deploy import Deployment
from builder.ostree.mounts import MountSpec, escape_path, merge_fstab, unit_name, unit_text, write_mounts

UUID = "0a1b2c3d-0000-4000-8000-000000000002"


@pytest.mark.parametrize(
    ("path", "escaped"),
    [
        # what `systemd-escape --path` prints (checked with systemd 252)
        ("/boot/efi", "boot-efi"),
        ("/var/log", "var-log"),
        ("/var/lib/my-data", "var-lib-my\\x2ddata"),
        ("/srv/.hidden", "srv-.hidden"),
        ("/mnt/a b", "mnt-a\\x20b"),
        ("/home/ü", "home-\\xc3\\xbc"),
        ("/var//x/", "var-x"),
        ("/", "-"),
        ("/.dot", "\\x2edot"),
    ],
)
def test_escape_path(path: str, escaped: str) -> None:
    assert escape_path(path) == escaped


def test_unit_text() -> None:
    spec = MountSpec("/boot/efi", "ABCD-1234", "vfat", "umask=0077,shortname=winnt")
    assert unit_name(spec.where) == "boot-efi.mount"
    text = unit_text(spec)
    assert "[Mount]\nWhat=/dev/disk/by-uuid/ABCD-1234\nWhere=/boot/efi\nType=vfat\n" in text
    assert "Options=umask=0077,shortname=winnt\n" in text
    assert text.endswith("[Install]\nWantedBy=local-fs.target\n")


@pytest.mark.parametrize(
    ("where", "uuid", "fstype", "options"),
    [
        ("/", UUID, "ext4", "defaults"),  # the initramfs mounts root
        ("boot", UUID, "ext4", "defaults"),
        ("/boot/../etc", UUID, "ext4", "defaults"),
        ("/boot/", UUID, "ext4", "defaults"),
        ("/boot", "not a uuid", "ext4", "defaults"),
        ("/boot", UUID, "ext4", "ro\nWhat=/dev/sda"),
        ("/boot", UUID, "", "defaults"),
    ],
)
def test_mountspec_rejects(where: str, uuid: str, fstype: str, options: str) -> None:
    with pytest.raises(ValueError):
        MountSpec(where, uuid, fstype, options)


def test_merge_fstab_replaces_lines_for_the_same_mount_point() -> None:
    existing = "# comment /boot\nUUID=old /boot ext4 defaults 0 2\nUUID=keep /data xfs defaults 0 0\n"
    merged = merge_fstab(existing, [MountSpec("/boot", UUID, "ext4", "ro")])
    assert merged == (f"# comment /boot\nUUID=keep /data xfs defaults 0 0\nUUID={UUID} /boot ext4 ro 0 0\n")


def _deployment(tmp_path: Path) -> Deployment:
    path = tmp_path / "ostree/deploy/default/deploy" / ("c" * 64 + ".0")
    (path / "etc").mkdir(parents=True)
    var = tmp_path / "ostree/deploy/default/var"
    var.mkdir()
    (tmp_path / "boot").mkdir()
    return Deployment(path, "default", "c" * 64, var, (), "6.1.0")


def test_write_units_enables_them(tmp_path: Path) -> None:
    dep = _deployment(tmp_path)
    assert dep.sysroot == tmp_path
    mounts = [
        MountSpec("/boot", UUID, "ext4", "ro"),
        MountSpec("/boot/efi", "ABCD-1234", "vfat", "umask=0077,shortname=winnt"),
        MountSpec("/var/lib/data", UUID.replace("2", "3"), "xfs", "defaults"),
    ]
    write_mounts(dep, mounts)
    write_mounts(dep, mounts)  # idempotent
    units = dep.path / "etc/systemd/system"
    assert sorted(p.name for p in units.glob("*.mount")) == [
        "boot-efi.mount",
        "boot.mount",
        "var-lib-data.mount",
    ]
    wants = sorted((units / "local-fs.target.wants").iterdir())
    assert [(p.name, str(p.readlink())) for p in wants] == [
        ("boot-efi.mount", "/etc/systemd/system/boot-efi.mount"),
        ("boot.mount", "/etc/systemd/system/boot.mount"),
        ("var-lib-data.mount", "/etc/systemd/system/var-lib-data.mount"),
    ]
    assert (dep.var / "lib/data").is_dir()  # the mount point in the stateroot's /var
    assert (tmp_path / "boot/efi").is_dir()  # and on the /boot filesystem
    assert not list(units.glob("*.partial"))


def test_write_fstab(tmp_path: Path) -> None:
    dep = _deployment(tmp_path)
    (dep.path / "etc/fstab").write_text("# /etc/fstab: static file system information.\n")
    write_mounts(dep, [MountSpec("/boot", UUID, "ext4", "ro")], style="fstab")
    assert (dep.path / "etc/fstab").read_text() == (
        f"# /etc/fstab: static file system information.\nUUID={UUID} /boot ext4 ro 0 0\n"
    )
    assert not (dep.path / "etc/systemd").exists()
    with pytest.raises(ValueError, match="twice"):
        write_mounts(dep, [MountSpec("/boot", UUID, "ext4", "ro")] * 2)
