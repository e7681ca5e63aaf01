"""Loop devices, mounts and every filesystem kind on a real GPT disk file (root, real tools)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from builder import run
from builder.devices import DeviceBusy, loop_device, mounted, unmount
from builder.disk import partition as pt
from builder.disk.mkfs import make_filesystem

MIB = 1024 * 1024
UUID = "0b0e0b0e-1111-4222-8333-444455556666"
FS_CHECK = {
    "ext4": ["e2fsck", "-fn"],
    "xfs": ["xfs_repair", "-n"],
    "btrfs": ["btrfs", "check", "--readonly"],
    "vfat": ["fsck.fat", "-n"],
}


def loops_of(image: Path) -> list[str]:
    return [line for line in run.run(["losetup", "-a"]).out.splitlines() if str(image) in line]


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Path, tuple[pt.Placed, ...]]:
    image = tmp_path / "disk.raw"
    specs = [
        pt.PartitionSpec("EFI-SYSTEM", pt.ESP, 100 * MIB, "11111111-2222-4333-8444-555555555501"),
        pt.PartitionSpec("data", pt.LINUX_DATA, 300 * MIB, "11111111-2222-4333-8444-555555555502"),
        pt.PartitionSpec("swap", pt.LINUX_SWAP, 64 * MIB, "11111111-2222-4333-8444-555555555503"),
        pt.PartitionSpec("guard", pt.LINUX_DATA, None, "11111111-2222-4333-8444-555555555504"),
    ]
    placed = pt.create_gpt(image, 512 * MIB, specs, disk_guid="D15CD15C-0000-4000-8000-000000000001")
    with open(image, "r+b") as f:  # a pattern after the data partition, to catch a filesystem overflowing it
        f.seek(placed[3].start)
        f.write(b"\xa5" * MIB)
    return image, placed


@pytest.mark.parametrize("fstype", ["ext4", "xfs", "btrfs", "vfat"])
def test_filesystem_is_clean_labelled_and_mountable(
    disk: tuple[Path, tuple[pt.Placed, ...]], fstype: str, tmp_path: Path
) -> None:
    image, (esp, data, _swap, guard) = disk
    part = esp if fstype == "vfat" else data
    uuid = "7B77-95E7" if fstype == "vfat" else UUID
    make_filesystem(image, part, fstype, uuid=uuid, label="boot")
    with loop_device(image, offset=part.start, size=part.size, read_only=True) as dev:
        run.run([*FS_CHECK[fstype], dev])
        probed = run.run(["blkid", "-p", "-o", "export", dev]).out
        assert f"UUID={uuid}" in probed and "LABEL=boot" in probed and f"TYPE={fstype}" in probed
    if fstype != "vfat":  # this kernel cannot mount vfat
        target = tmp_path / "mnt"
        target.mkdir()
        with (
            loop_device(image, offset=part.start, size=part.size) as dev,
            mounted(dev, target, fstype=fstype),
        ):
            (target / "hello").write_text("hi")
        with (
            loop_device(image, offset=part.start, size=part.size) as dev,
            mounted(dev, target, options=["ro"]),
        ):
            assert (target / "hello").read_text() == "hi"
        assert not os.path.ismount(target)
    with open(image, "rb") as f:
        f.seek(guard.start)
        assert f.read(MIB) == b"\xa5" * MIB
    assert not loops_of(image)


def test_btrfs_and_ext4_populated_from_a_directory(
    disk: tuple[Path, tuple[pt.Placed, ...]], tmp_path: Path
) -> None:
    image, (_esp, data, _swap, _guard) = disk
    tree = tmp_path / "tree"
    (tree / "usr").mkdir(parents=True)
    (tree / "usr" / "file").write_text("content")
    target = tmp_path / "mnt"
    target.mkdir()
    for fstype in ("btrfs", "ext4"):
        make_filesystem(image, data, fstype, uuid=UUID, label="root", root_dir=tree)
        with (
            loop_device(image, offset=data.start, size=data.size) as dev,
            mounted(dev, target, options=["ro"]),
        ):
            assert (target / "usr" / "file").read_text() == "content"


def test_swap(disk: tuple[Path, tuple[pt.Placed, ...]]) -> None:
    image, (_esp, _data, swap, _guard) = disk
    make_filesystem(image, swap, "swap", uuid=UUID, label="swap")
    with loop_device(image, offset=swap.start, size=swap.size, read_only=True) as dev:
        probed = run.run(["blkid", "-p", "-o", "export", dev]).out
    assert f"UUID={UUID}" in probed and "TYPE=swap" in probed


def test_resources_are_released_when_the_block_raises(
    disk: tuple[Path, tuple[pt.Placed, ...]], tmp_path: Path
) -> None:
    image, (_esp, data, _swap, _guard) = disk
    make_filesystem(image, data, "ext4", uuid=UUID, label="root")
    target = tmp_path / "mnt"
    target.mkdir()
    for error in (RuntimeError("bug"), KeyboardInterrupt()):
        with pytest.raises(type(error)):
            with loop_device(image, offset=data.start, size=data.size) as dev, mounted(dev, target):
                raise error
        assert not os.path.ismount(target)
        assert not loops_of(image)


def test_sigterm_turned_into_an_exception_releases_everything(
    disk: tuple[Path, tuple[pt.Placed, ...]], tmp_path: Path
) -> None:
    image, (_esp, data, _swap, _guard) = disk
    make_filesystem(image, data, "ext4", uuid=UUID, label="root")
    target = tmp_path / "mnt"
    target.mkdir()

    class Terminated(Exception):
        pass

    def on_sigterm(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with pytest.raises(Terminated):
            with loop_device(image, offset=data.start, size=data.size) as dev, mounted(dev, target):
                threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
                threading.Event().wait(5)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert not os.path.ismount(target)
    assert not loops_of(image)


def test_a_busy_mount_names_its_holder(disk: tuple[Path, tuple[pt.Placed, ...]], tmp_path: Path) -> None:
    image, (_esp, data, _swap, _guard) = disk
    make_filesystem(image, data, "ext4", uuid=UUID, label="root")
    target = tmp_path / "mnt"
    target.mkdir()
    with loop_device(image, offset=data.start, size=data.size) as dev:
        with pytest.raises(DeviceBusy, match=rf"held by: .*{os.getpid()} \(") as caught:
            with mounted(dev, target):
                holder = open(target / "held", "w")  # noqa: SIM115 - held open on purpose
        holder.close()
        assert "cannot unmount" in str(caught.value)
        unmount(target)
    assert not loops_of(image)
