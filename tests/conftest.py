import os
import sys

import pytest
import torch

from unitscope.core.state import torch_threads

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Small models on a shared 2-core machine: one torch thread avoids oversubscription (10–50× slower with
    two when another process is busy). Restored afterwards."""
    with torch_threads(1):
        yield


def pytest_collection_modifyitems(config, items):
    """``UNITSCOPE_TEST_ORDER=reverse`` runs the suite backwards: a test that passes only after another one (a warm
    model cache, a module-level state) fails there (``make test`` runs it forwards; the reversed run is a check)."""
    if os.environ.get("UNITSCOPE_TEST_ORDER") == "reverse":
        items.reverse()
