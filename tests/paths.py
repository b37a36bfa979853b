"""Where tests find the shared public fixtures (``../shared/fixtures`` beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures"


def fixture_path(*parts: str) -> Path:
    """Return a path under the shared fixtures; skip (fail under CI=true) when absent."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        message = f"shared fixture {path} is absent (expected ../shared/fixtures beside the checkout)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path
