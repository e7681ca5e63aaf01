"""Shared test fixtures and the marker policy.

Every test module is marked unit, integration or vm. Integration and vm tests need root and the Debian
tools: when they are missing the tests fail (they do not skip), so CI cannot go green without them.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.diskuse import PeakSampler, remove_passed_tmp
from tests.imagebuilds import ImageBuilds

if TYPE_CHECKING:
    from builder.example import ExampleImage
    from tests.pgcluster import Cluster
    from tests.signing import Keys, SignedImages

# Sample images written by ostree-ext's own test suite (origin and licence: tests/data/ostree-ext/README.md).
FIXTURES = Path(__file__).resolve().parent / "data" / "ostree-ext"


_PHASES_PASSED = pytest.StashKey[dict[str, bool]]()
_DISK: list[PeakSampler] = []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    item.stash.setdefault(_PHASES_PASSED, {})[report.when] = report.passed
    return report


@pytest.fixture(scope="session", autouse=True)
def _disk_peak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Records the peak size of the session's temporary directory (printed at the end: tests/diskuse.py)."""
    sampler = PeakSampler(tmp_path_factory.getbasetemp())
    sampler.start()
    _DISK.append(sampler)
    try:
        yield
    finally:
        sampler.stop()


@pytest.fixture(autouse=True)
def _remove_tmp_path_when_passed(request: pytest.FixtureRequest) -> Iterator[None]:
    """A passed test's tmp_path is removed when it ends (a failed one's is kept): tests/diskuse.py."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    path: Path = request.getfixturevalue("tmp_path")  # the test's own, set up before this one ends
    yield
    passed = request.node.stash.get(_PHASES_PASSED, {})
    if passed.get("setup") and passed.get("call"):
        remove_passed_tmp(path, _DISK[-1] if _DISK else None)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for sampler in _DISK:
        for line in sampler.summary():
            terminalreporter.write_line(f"disk: {line}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in ("unit", "integration", "vm"):
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One throw-away PostgreSQL cluster for the session (tests/pgcluster.py); each test makes its own
    database in it."""
    from tests.pgcluster import start_cluster

    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def service_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a service test with its state in SQLite, then in PostgreSQL (test_service_support.DATABASE)."""
    from tests.unit.test_service_support import DATABASE

    if request.param == "postgresql":
        cluster: Cluster = request.getfixturevalue("postgres_cluster")
        DATABASE.url = cluster.create_database()
    try:
        yield str(request.param)
    finally:
        DATABASE.url = None


@pytest.fixture(scope="session")
def ostree_ext_fixtures() -> Path:
    assert FIXTURES.is_dir(), f"the ostree-ext test data is missing: {FIXTURES}"
    return FIXTURES


@pytest.fixture(scope="session")
def example_x86_64() -> ExampleImage:
    """The example Debian ostree OS for x86_64 (built once, then taken from its cache)."""
    from builder.arch import Arch
    from builder.example import build_example

    return build_example(Arch.X86_64)


@pytest.fixture(scope="session")
def example_aarch64() -> ExampleImage:
    from builder.arch import Arch
    from builder.example import build_example

    return build_example(Arch.AARCH64)


@pytest.fixture(scope="session")
def imgbuild_container() -> str:
    """imgbuild's container image (make container; cached by its inputs), in containers-storage."""
    from builder import container_image

    tag = "localhost/imgbuild-test:latest"
    container_image.load(container_image.build(), tag)
    return tag


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> ImageBuilds:
    """Disk images built once per session and shared by the tests that inspect or boot them."""
    return ImageBuilds(tmp_path_factory.mktemp("images"))


@pytest.fixture
def builder_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The builder's temporary directories (its mount points) under tmp_path, so leaks are found there."""
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setenv("TMPDIR", str(work))
    return tmp_path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    """Two GPG signing keys (tests/signing.py), made for each module that signs; gpg-agent stopped after."""
    from tests.signing import signing_keys

    with signing_keys(tmp_path_factory.mktemp("keys")) as made:
        yield made


@pytest.fixture(scope="module")
def signed(
    example_x86_64: ExampleImage, keys: Keys, tmp_path_factory: pytest.TempPathFactory
) -> SignedImages:
    """The example's commit signed by `keys.good`, encapsulated, and a tampered variant."""
    from tests.signing import make_signed_images

    return make_signed_images(example_x86_64, keys, tmp_path_factory.mktemp("signed"))
