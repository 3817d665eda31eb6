"""Shared fixtures: paths to the read-only public traces in ../shared/traces (tests only)."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_TRACES = REPO.parent / "shared" / "traces"


@pytest.fixture
def shared_traces() -> Path:
    """The public real-world traces beside the repository; skip when absent."""
    if not SHARED_TRACES.is_dir():
        pytest.skip(f"public test traces not found at {SHARED_TRACES}")
    return SHARED_TRACES
