"""The cache's bookkeeping without an image: sizes as du counts them, leases of live and dead holders, prune
waiting for a writer, the prune decision, the size formatter."""

from __future__ import annotations

import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest

from builder import run
from builder.cachedir import locks
from builder.cachedir.inventory import CachedImage, FetchedOnly, Inventory
from builder.cachedir.prune import decide
from builder.cachedir.usage import tree_size
from builder.sizefmt import human

ROOT = Path(__file__).resolve().parents[2]


def test_tree_size_is_du_sb(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 5000)
    os.link(tmp_path / "a" / "one", tmp_path / "a" / "b" / "same")  # counted once, as du does
    (tmp_path / "a" / "b" / "two").write_bytes(b"y" * 123)
    (tmp_path / "a" / "link").symlink_to("one")
    (tmp_path / "empty").mkdir()
    du = int(run.run(["du", "-sb", tmp_path]).out.split()[0])
    assert tree_size(tmp_path) == du
    assert tree_size(tmp_path / "missing") == 0


_HOLDER = """
import sys, time
from pathlib import Path
from builder.cachedir import locks
with locks.writing(Path(sys.argv[1])):
    locks.take(Path(sys.argv[1]), "ostree/container/image/x", "sha256:" + "a" * 64)
print("held", flush=True)
time.sleep(600)
"""


def test_lease_of_a_live_holder_counts_and_a_dead_one_is_stale(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", _HOLDER, str(tmp_path)]
    with run.spawn(argv, env={"PYTHONPATH": str(ROOT)}, check=False) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        (lease,) = locks.live_leases(tmp_path, remove_stale=True)
        assert (lease.pid, lease.image_ref, lease.digest) == (
            holder.pid,
            "ostree/container/image/x",
            "sha256:" + "a" * 64,
        )
        holder.send_signal(signal.SIGKILL)  # no cleanup at all: the file stays, unlocked
        holder.wait()
    assert lease.path.exists()
    assert locks.live_leases(tmp_path, remove_stale=False) == []
    assert lease.path.exists()
    assert locks.live_leases(tmp_path, remove_stale=True) == []
    assert not lease.path.exists()
    assert locks.last_used(tmp_path, "ostree/container/image/x") is not None


def test_lease_released_in_process(tmp_path: Path) -> None:
    with locks.leased(tmp_path, "ostree/container/image/y", None):
        (lease,) = locks.live_leases(tmp_path, remove_stale=True)
        assert lease.pid == os.getpid() and lease.digest is None
    assert locks.live_leases(tmp_path, remove_stale=True) == []
    assert list((tmp_path / "leases").iterdir()) == []


def test_prune_waits_for_a_running_import(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "builder", "cache", "prune", "--all", "--cache", str(tmp_path)]
    with ExitStack() as writer:
        writer.enter_context(locks.writing(tmp_path))  # what a fetch or an import holds
        with run.spawn(argv, env={"PYTHONPATH": str(ROOT)}, check=False) as prune:
            assert prune.stderr is not None
            line = prune.stderr.readline()
            assert line == b"imgbuild: waiting for a running fetch or import to finish\n"
            assert prune.poll() is None
            writer.close()  # the import ends: prune goes on
            assert prune.wait(60) == 0


def test_prune_needs_a_choice_and_a_number(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "builder", "cache", "prune", "--cache", str(tmp_path)]
    env = {"PYTHONPATH": str(ROOT)}
    neither = run.run(base, env=env, check=False)
    assert neither.returncode == 2 and b"one of the arguments --keep-last --all is required" in neither.stderr
    word = run.run([*base, "--keep-last", "two"], env=env, check=False)
    assert word.returncode == 2
    assert word.stderr.decode().splitlines() == [
        "imgbuild: error: --keep-last takes a number of images, not 'two'",
        "hint: e.g. --keep-last 2, or --all",
    ]


def _image(name: str, used: float | None, in_use: tuple[int, ...] = ()) -> CachedImage:
    return CachedImage(name, f"ref/{name}", "c" * 64, None, (), 10, 5, used, in_use)


@pytest.mark.parametrize(
    ("keep_last", "removed"),
    [
        (None, ["new", "fetched", "old"]),
        (0, ["new", "fetched", "old"]),
        (1, ["fetched", "old"]),
        (2, ["old"]),
        (9, []),
    ],
)
def test_decide_keeps_the_last_used_and_those_in_use(keep_last: int | None, removed: list[str]) -> None:
    fetched = FetchedOnly("fetched", (), 3, 3, 50.0, ())
    images = (_image("old", 10.0), _image("busy", 5.0, (42,)), _image("new", 100.0))
    inv = Inventory(Path("/c"), 0, {}, "bare", images, (fetched,), 0, 0, ())
    decision = decide(inv, keep_last)
    names = [e.reference if isinstance(e, CachedImage) else e.manifest_digest for e in decision.remove]
    assert names == removed
    assert [e.reference for e in decision.in_use if isinstance(e, CachedImage)] == ["busy"]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (1536, "1.5 KiB"),
        (525336576, "501 MiB"),
        (int(3.3 * 2**30), "3.3 GiB"),
        (4 << 30, "4 GiB"),
        (2**20 - 6, "1 MiB"),
    ],
)
def test_human_sizes(size: int, text: str) -> None:
    assert human(size) == text
