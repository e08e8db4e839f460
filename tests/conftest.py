"""Shared test set-up: one thread per process so tests behave the same on any machine."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(1)
os.environ.setdefault("FACEREP_PROGRESS", "0")


@pytest.fixture
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """The built-in synthetic benchmark's ``tiny`` preset (every dataset), written once per session."""
    import subprocess
    out = tmp_path_factory.mktemp("synthetic")
    subprocess.run([sys.executable, "-m", "common.synthetic", "--out", str(out), "--preset", "tiny",
                    "--seed", "0"], cwd=ROOT, check=True)
    return out
