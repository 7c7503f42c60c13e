"""Shared test setup: the slowest files first, fercore's cache out of the user's home, one torch thread where a
module asks for it."""

import pytest

# The files that take longest (a clean run's --durations on a 2-core CPU: the two browser files 4-5 min each, the
# others 1-2 min), browser and CPU-bound ones alternating. The two workers take files in this order as each gets free, so they end
# together instead of one running the longest file alone at the end. The rest follow in their usual order.
SLOWEST_FILES_FIRST = ("test_browser.py", "test_snapshots.py", "test_browser_pages.py", "test_kill_resume.py",
                       "test_report.py", "test_training.py", "test_lesson.py", "test_cli.py", "test_distributed.py")


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return SLOWEST_FILES_FIRST.index(name) if name in SLOWEST_FILES_FIRST else len(SLOWEST_FILES_FIRST)

    items.sort(key=rank)  # stable: each file's tests keep their order


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
