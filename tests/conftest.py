"""Shared test setup: keep fercore's cache out of the user's home; one torch thread where a module asks for it."""

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session gets its own fercore cache folder, so tests never see a user's cache."""
    monkeypatch.setenv("FERCORE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fercore-cache"))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): its small models train and
    evaluate as fast, and on 2 shared cores a second OpenMP thread mostly waits for other work."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
