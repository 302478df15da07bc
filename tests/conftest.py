"""Shared fixtures: the repo root on sys.path and the real-data folder."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


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
