"""CPU threads (issue 16, class 10): torch's threads per process come from the cores this process may use, shared
among the processes a launcher starts on the machine; an explicit OMP_NUM_THREADS wins."""
import pytest
import torch

from core import distributed


@pytest.fixture
def threads(monkeypatch):
    before = torch.get_num_threads()
    for var in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", "LOCAL_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    yield monkeypatch
    torch.set_num_threads(before)


@pytest.mark.parametrize("env, expected", [
    ({}, 8),                                   # one process: every core it may run on
    ({"LOCAL_WORLD_SIZE": "2"}, 4),            # torchrun, 2 processes per machine
    ({"LOCAL_SIZE": "3"}, 2),                  # the deepspeed launcher, 3 processes
    ({"LOCAL_WORLD_SIZE": "16"}, 1),           # never below one
])
def test_share_of_the_available_cores(threads, env, expected):
    for k, v in env.items():
        threads.setenv(k, v)
    assert distributed.available_cores() <= 8
    assert distributed.configure_threads() == min(expected, distributed.available_cores())


def test_explicit_omp_num_threads_is_kept(threads):
    threads.setenv("OMP_NUM_THREADS", "3")
    torch.set_num_threads(3)          # as torch does when it starts with OMP_NUM_THREADS=3
    threads.setenv("LOCAL_WORLD_SIZE", "8")
    assert distributed.configure_threads() == 3


def test_affinity_not_machine_size(monkeypatch):
    monkeypatch.setattr(distributed.os, "sched_getaffinity", lambda pid: {3})
    assert distributed.available_cores() == 1
