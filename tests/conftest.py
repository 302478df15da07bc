"""Shared fixtures (the real-data folder, one finished tiny run) and the --slow switch.

`pytest -q tests` runs the fast tests (under two minutes on two cores); `--slow` adds
the end-to-end runs marked @pytest.mark.slow (several devices, clusters, signals), as CI does.
"""
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# MNIST's array cache (segm/readers.py) in a folder of this session's own, for the runs in
# subprocesses too: tests leave nothing in the checkout's im/ and find nothing a run left there.
CACHE = tempfile.mkdtemp(prefix="segm-cache-")
os.environ["SEGM_CACHE_DIR"] = CACHE


def pytest_unconfigure(config):
    shutil.rmtree(CACHE, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="also run the slow end-to-end tests (as CI does)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: an end-to-end run of many seconds; needs --slow")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--slow"):
        skip = pytest.mark.skip(reason="slow end-to-end test: run with --slow")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def in_a_temporary_folder(tmp_path, monkeypatch):
    """Every test runs in its own folder, so no run can land in the checkout's im/."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def real_data_dir():
    """The folder named by SEGM_DATA_DIR; skipped when unset, except under CI."""
    value = os.environ.get("SEGM_DATA_DIR")
    in_ci = os.environ.get("CI", "").lower() == "true"
    if not value or not Path(value).is_dir():
        reason = f"SEGM_DATA_DIR={value!r} is not a folder of real MNIST/CIFAR files"
        if in_ci:
            pytest.fail(reason + " (required under CI=true)")
        pytest.skip(reason)
    return Path(value)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One finished tiny run (4 steps, checkpoints at 2 and 4), shared; copy it to change it."""
    import main
    from helpers import TINY
    out = tmp_path_factory.mktemp("finished") / "run"
    handler = signal.getsignal(signal.SIGTERM)
    try:
        assert main.main([*TINY, "--steps", "4", "--eval_every", "2", "--out_dir", str(out)]) == 0
    finally:
        signal.signal(signal.SIGTERM, handler)
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    return Path(shutil.copytree(finished_run, tmp_path / "run"))
