"""A mount that cannot be released while another failure unwinds: the first failure is raised, the busy
mount is reported beside it (with the process holding it)."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from builder import devices, run
from builder.errors import StageFailed


def test_busy_mount_is_reported_beside_the_first_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devices, "RELEASE_ATTEMPTS", 1)
    image = tmp_path / "fs.img"
    run.run(["truncate", "-s", "32M", image])
    run.run(["mkfs.ext4", "-q", image])
    target = tmp_path / "mnt"
    target.mkdir()
    with ExitStack() as outer:
        # Last out: unmount once the holder is gone (the loop device then goes with it: autoclear).
        outer.callback(run.run, ["umount", target], check=False)
        with pytest.raises(StageFailed) as info, devices.ReleaseStack() as stack:
            device = stack.enter_context(devices.loop_device(image))
            stack.enter_context(devices.mounted(device, target, fstype="ext4"))
            # A process whose working directory is on the mount keeps it busy past the block.
            holder = outer.enter_context(
                run.spawn([sys.executable, "-c", "import time; time.sleep(60)"], cwd=target, check=False)
            )
            outer.callback(holder.kill)
            raise StageFailed("the first failure")
        assert info.value.message == "the first failure"
        notes = getattr(info.value, "__notes__", [])
        assert len(notes) == 1 and f"cannot unmount {target}" in notes[0], notes
        assert f"{holder.pid} (python" in notes[0], notes
    assert not any(line.split()[1] == str(target) for line in Path("/proc/mounts").read_text().splitlines())
