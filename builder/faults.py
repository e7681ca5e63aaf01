"""Failure injection for the tests of the cleanup paths (IMGBUILD_FAIL_STAGE), nothing else.

    IMGBUILD_FAIL_STAGE=<stage index or kind>        the stage fails after its work is done
    IMGBUILD_FAIL_STAGE=<stage index or kind>:held   the stage fails in the middle of its work, at the first
                                                     command (or explicit point) reached while it holds a
                                                     loop device or a mount; a stage that never does fails
                                                     at its end

    IMGBUILD_PAUSE_STAGE=<stage index or kind>:<file>
                                                     the stage waits at its start while <file> exists,
                                                     after writing <file>.reached (its pid): a test does
                                                     something while a build is running, then removes
                                                     <file> and the build goes on

The runner says which stage runs; builder/devices.py counts the loop devices and mounts held; builder/run.py
and builder/stages/sysroot.py call `point` where work happens. Without the variable all of this is a dict
look-up per call.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import StageFailed

ENV = "IMGBUILD_FAIL_STAGE"
PAUSE_ENV = "IMGBUILD_PAUSE_STAGE"
# Commands that take or release the resources themselves: failing there is not "while holding" them.
_RESOURCE_COMMANDS = frozenset(("losetup", "mount", "umount"))


@dataclass
class _State:
    armed: bool = False  # the current stage is the one to fail mid-work
    fired: bool = False
    held: dict[str, int] = field(default_factory=lambda: {"loop": 0, "mount": 0})


_state = _State()


def _wanted(index: int, kind: str) -> tuple[bool, bool]:
    """(fail this stage, in the middle of its work)."""
    wanted = os.environ.get(ENV)
    if wanted is None:
        return False, False
    name, _, mode = wanted.partition(":")
    return name in (kind, str(index)), mode == "held"


def stage_started(index: int, kind: str) -> None:
    fail, held = _wanted(index, kind)
    _state.armed, _state.fired = fail and held, False


def pause(index: int, kind: str) -> None:
    wanted = os.environ.get(PAUSE_ENV)
    if wanted is None:
        return
    name, _, gate = wanted.partition(":")
    if name not in (kind, str(index)) or not gate:
        return
    with open(f"{gate}.reached", "w") as reached:
        reached.write(f"{os.getpid()}\n")
    while Path(gate).exists():
        time.sleep(0.1)


def stage_finished(index: int, kind: str) -> None:
    """Called after the stage's work: fail here unless the failure fired in the middle already."""
    fail, held = _wanted(index, kind)
    _state.armed = False
    if not fail:
        return
    if _state.fired:  # reaching the end means the stage caught the failure injected in its middle
        raise StageFailed(f"the failure injected by {ENV} was swallowed inside the stage")
    where = " (it held no loop device or mount at any command)" if held else ""
    raise StageFailed(f"failure injected by {ENV} after the stage's work{where}")


def acquired(resource: str) -> None:
    _state.held[resource] += 1


def released(resource: str) -> None:
    _state.held[resource] -= 1


def point(what: str) -> None:
    """A place in the middle of a stage's work: fail here if this stage is armed and holds something."""
    if not _state.armed or what in _RESOURCE_COMMANDS:
        return
    loops, mounts = _state.held["loop"], _state.held["mount"]
    if loops + mounts == 0:
        return
    _state.armed, _state.fired = False, True
    raise StageFailed(
        f"failure injected by {ENV} at {what} while holding {loops} loop device(s) and {mounts} mount(s)"
    )
