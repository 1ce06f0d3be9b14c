"""The CLI's default thread count: one per core the process may use (affinity mask, SLURM_CPUS_PER_TASK), measured
by benchmarks/threads.py (issue 20). The rule is tested here without timings."""

from __future__ import annotations

import pytest

from funcdiff import cli


@pytest.mark.parametrize("environ, affinity, expected", [
    ({}, range(64), 64),                                   # a workstation: every core
    ({}, {0, 1}, 2),                                       # this machine
    ({}, {5}, 1),                                          # taskset -c 5
    ({"SLURM_CPUS_PER_TASK": "32"}, range(128), 32),       # Slurm task on a bigger node that shows the whole mask
    ({"SLURM_CPUS_PER_TASK": "32"}, range(8), 8),          # cgroup mask smaller than the request
    ({"SLURM_CPUS_PER_TASK": " 4\n"}, range(16), 4),       # whitespace
    ({"SLURM_CPUS_PER_TASK": "0"}, range(16), 16),         # nonsense is ignored
    ({"SLURM_CPUS_PER_TASK": "abc"}, range(16), 16),
    ({"SLURM_CPUS_PER_TASK": "-3"}, range(16), 16),
    ({"SLURM_CPUS_PER_TASK": ""}, range(16), 16),
    ({}, set(), 1),                                        # never 0
])
def test_allowed_cores(environ, affinity, expected):
    assert cli.allowed_cores(environ, affinity) == expected
    assert cli.default_threads(environ, affinity) == expected


def test_allowed_cores_without_affinity(monkeypatch):
    monkeypatch.delattr(cli.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(cli.os, "cpu_count", lambda: 6)
    assert cli.allowed_cores({}) == 6


def test_set_thread_policy(monkeypatch):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    try:
        torch.set_num_threads(3)
        cli.set_thread_policy(None, "sample")  # the rule
        assert torch.get_num_threads() == 1
        cli.set_thread_policy(2, "sample")     # --threads wins
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        cli.set_thread_policy(None, "sample")  # OMP_NUM_THREADS: left alone
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_set_thread_policy_imports_no_torch(monkeypatch):
    """Before torch is imported, the count goes to OMP_NUM_THREADS (torch reads it on import)."""
    import sys

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    cli.set_thread_policy(None, "data")
    assert "torch" not in sys.modules
    assert cli.os.environ["OMP_NUM_THREADS"] == "1"
