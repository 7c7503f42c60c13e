"""fercore is installed (requirements.txt's `-e .`), so the scripts and benchmarks run from any folder with no
import-path code of their own; bench_clicks and bench_lecture, which drive the app, run as modules from the repository root."""

import os
import subprocess
import sys

import pytest

from fixtures import ROOT

# These import the app's ui or tests/browser_kit, which are not installed: they run as modules from the root.
AS_MODULES = {"benchmarks/bench_clicks.py", "benchmarks/bench_lecture.py"}
AS_FILES = sorted(str(p.relative_to(ROOT)) for folder in ("scripts", "benchmarks") for p in (ROOT / folder).glob("*.py")
                  if str(p.relative_to(ROOT)) not in AS_MODULES)


def python(*args, cwd):
    """The test's interpreter with no PYTHONPATH, so only what is installed can be imported."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Fail every test here with the fix when fercore is only importable from the repository root."""
    done = python("-c", "import importlib.metadata as m, fercore; print(fercore.__file__, m.version('fercore'))",
                  cwd=tmp_path_factory.mktemp("elsewhere"))
    if done.returncode != 0:
        pytest.fail(f"fercore is not installed in {sys.prefix}: run `pip install -r requirements.txt` in the "
                    f"repository root (its `-e .` line installs it)\n{done.stderr.strip().splitlines()[-1]}")
    return done.stdout.split()


def test_fercore_is_installed_from_this_checkout(installed):
    import fercore

    path, version = installed
    assert path == str(ROOT / "fercore" / "__init__.py") and version == fercore.__version__


@pytest.mark.parametrize("script", AS_FILES)
def test_each_script_runs_from_another_folder(installed, script, tmp_path):
    done = python(str(ROOT / script), "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")


@pytest.mark.parametrize("script", sorted(AS_MODULES))
def test_the_app_bound_benchmark_runs_as_a_module_from_the_root(installed, script):
    module = script.removesuffix(".py").replace("/", ".")
    done = python("-m", module, "--help", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: ")
