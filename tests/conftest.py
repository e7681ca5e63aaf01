"""Shared test fixtures and the marker policy.

Every test module is marked unit, integration or vm. Integration and vm tests need root and the Debian
tools: when they are missing the tests fail (they do not skip), so CI cannot go green without them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures" / "ostree-ext"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        for layer in ("unit", "integration", "vm"):
            if layer in parts:
                item.add_marker(getattr(pytest.mark, layer))


@pytest.fixture(scope="session")
def ostree_ext_fixtures() -> Path:
    assert FIXTURES.is_dir(), f"the shared fixtures are missing: {FIXTURES}"
    return FIXTURES
