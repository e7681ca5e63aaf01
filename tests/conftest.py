"""Shared test fixtures and the marker policy.

Every test module is marked unit, integration or vm. Integration and vm tests need root and the Debian
tools: when they are missing the tests fail (they do not skip), so CI cannot go green without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.imagebuilds import ImageBuilds

if TYPE_CHECKING:
    from builder.example import ExampleImage
    from tests.pgcluster import Cluster
    from tests.signing import Keys, SignedImages

# Sample images written by ostree-ext's own test suite (origin and licence: tests/data/ostree-ext/README.md).
FIXTURES = Path(__file__).resolve().parent / "data" / "ostree-ext"


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
