"""Shared test setup: keep fercore's cache out of the user's home."""

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own fercore cache folder, so tests never see a user's cache."""
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fercore-cache"))
