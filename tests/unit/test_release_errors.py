"""A cleanup that fails never hides the failure that started the unwinding: the first error is the one
raised and reported, the cleanup's error is printed beside it (Python's ExitStack alone would replace it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from builder.cli import report
from builder.devices import DeviceBusy, ReleaseStack
from builder.errors import ImgbuildError, StageFailed


@contextmanager
def _fails_to_release(name: str, released: list[str]) -> Iterator[None]:
    try:
        yield
    finally:
        released.append(name)
        raise DeviceBusy(f"cannot unmount /mnt/{name}: target is busy")


def test_first_error_stays_and_cleanup_errors_are_noted() -> None:
    released: list[str] = []
    with pytest.raises(StageFailed) as info, ReleaseStack() as stack:
        stack.enter_context(_fails_to_release("a", released))
        stack.enter_context(_fails_to_release("b", released))
        stack.callback(released.append, "callback")
        raise StageFailed("mkfs.ext4 failed")
    assert released == ["callback", "b", "a"]  # every release still attempted, in reverse order
    assert info.value.message == "mkfs.ext4 failed"
    assert info.value.__notes__ == [
        "also, while releasing: cannot unmount /mnt/b: target is busy",
        "also, while releasing: cannot unmount /mnt/a: target is busy",
    ]


def test_without_an_error_the_first_failed_release_is_the_error() -> None:
    released: list[str] = []
    with pytest.raises(DeviceBusy) as info, ReleaseStack() as stack:
        stack.enter_context(_fails_to_release("a", released))
        stack.enter_context(_fails_to_release("b", released))
    assert info.value.message == "cannot unmount /mnt/b: target is busy"
    assert info.value.__notes__ == ["also, while releasing: cannot unmount /mnt/a: target is busy"]


def test_interrupt_stays_an_interrupt() -> None:
    released: list[str] = []
    with pytest.raises(KeyboardInterrupt) as info, ReleaseStack() as stack:
        stack.enter_context(_fails_to_release("a", released))
        raise KeyboardInterrupt
    assert info.value.__notes__ == ["also, while releasing: cannot unmount /mnt/a: target is busy"]


def test_report_prints_the_noted_errors_beside(capsys: pytest.CaptureFixture[str]) -> None:
    error = ImgbuildError("stage 3/9 fs.mkfs (pipelines[0].stages[2]) failed: boom", hint="fix it")
    error.add_note("also, while releasing: cannot detach /dev/loop7: busy")
    assert report(error, debug=False) == 2
    assert capsys.readouterr().err.splitlines() == [
        "imgbuild: error: stage 3/9 fs.mkfs (pipelines[0].stages[2]) failed: boom",
        "imgbuild: also, while releasing: cannot detach /dev/loop7: busy",
        "hint: fix it",
    ]
