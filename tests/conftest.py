"""Shared test setup: keep fercore's cache out of the user's home; one torch thread where a module asks for it."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def isolated_cache(tmp_path_factory):
    """Each test session gets its own fercore cache folder, so tests never see a user's cache, nor one left by an
    earlier session. Session-wide, so it is set before any module's server starts: a `streamlit run` subprocess
    inherits it too (a per-test setting came after the module fixtures, and their servers used ~/.cache/fercore)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FERCORE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fercore-cache"))
        yield


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_thread")`): its small models train and
    evaluate as fast, and on 2 shared cores a second OpenMP thread mostly waits for other work."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
