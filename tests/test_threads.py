"""CPU threads of a job (qrecipe/run/resources.py set_threads): hardware.num_threads, else
OMP_NUM_THREADS, else every core; gptqmodel's worker pool never below the 2 it needs."""
import os
from types import SimpleNamespace

import pytest
import torch

from qrecipe.run import resources


@pytest.fixture
def restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("GPTQMODEL_CPU_WORKERS", raising=False)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("omp,setting,threads", [
    ("3", None, 3),   # a scheduler's or user's share of the node
    ("3", 1, 1),      # the recipe's hardware.num_threads wins
    ("", None, None),  # unset: every core
    ("abc", None, None),  # not a count: every core
    ("0", None, None),
])
def test_threads_follow_the_setting_then_omp_then_the_cores(omp, setting, threads, monkeypatch,
                                                            restore_threads):
    monkeypatch.setenv("OMP_NUM_THREADS", omp)
    resources.set_threads(SimpleNamespace(num_threads=setting))
    want = threads or os.cpu_count()
    assert torch.get_num_threads() == want
    assert int(os.environ["GPTQMODEL_CPU_WORKERS"]) == max(2, want)
