"""Root pytest configuration. Area-specific fixtures live in tests/support/ and the area's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared/`` folder beside the checkout (RFC vectors live in ``shared/vectors``)."""
    if not (SHARED / "vectors").is_dir():
        pytest.fail(f"../shared/vectors not found at {SHARED}; clone the project beside shared/")
    return SHARED
