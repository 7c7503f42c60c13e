"""Shared test setup: run from the repo root, keep caches out of the user's home, leave a core free."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own fercore cache folder, so tests never see a user's cache."""
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fercore-cache"))
