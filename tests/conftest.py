"""Shared test set-up: one thread per process so tests behave the same on any machine."""
import os
import subprocess
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
    out = tmp_path_factory.mktemp("synthetic")
    subprocess.run([sys.executable, "-m", "common.synthetic", "--out", str(out), "--preset", "tiny",
                    "--seed", "0"], cwd=ROOT, check=True)
    return out


@pytest.fixture(scope="session")
def small_preset(tmp_path_factory):
    """``write(*names)``: the ``small`` preset's copies of ``names`` (common.synthetic ``--only``) in a new
    folder. Enough faces for a from-scratch CPU run to generalise: the held-out learning tests of
    issues 6-9 use it, each writing only the datasets it needs."""
    def write(*names):
        out = tmp_path_factory.mktemp("synthetic_small")
        subprocess.run([sys.executable, "-m", "common.synthetic", "--out", str(out), "--preset", "small",
                        "--seed", "0", "--workers", "1", "--only", *names], cwd=ROOT, check=True)
        return out
    return write
