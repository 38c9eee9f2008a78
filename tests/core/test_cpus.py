"""Thread sizing from cgroup limits, read from cgroup files laid out as the kernel does."""

import os
from pathlib import Path

import pytest

from modelserver.ops.cpus import available_cpus, threads_per_worker

REPO = Path(__file__).resolve().parents[2]
IRIS = str(REPO / "examples" / "sklearn-iris")
AFFINITY = len(os.sched_getaffinity(0))


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert available_cpus(tmp_path) == min(1.5, AFFINITY)


def test_cgroup_v2_unlimited_falls_back_to_affinity(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == AFFINITY


@pytest.mark.parametrize("folder", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_quota(tmp_path, folder):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / folder / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 0.5


def test_cgroup_v1_unlimited(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == AFFINITY


@pytest.mark.parametrize("cpus,workers,threads", [(8, 1, 8), (8, 4, 2), (2, 4, 1), (1.5, 1, 1),
                                                   (0.5, 1, 1), (16, 3, 5)])
def test_threads_per_worker(cpus, workers, threads):
    assert threads_per_worker(workers, cpus) == threads


def test_server_sizes_threads_for_its_workers(launch):
    server = launch("-m", "sklearnserver", "--model_dir", IRIS, "--workers", "2",
                    env={"OMP_NUM_THREADS": ""})
    expected = threads_per_worker(2)
    assert f"2 worker(s), {expected} thread(s) each" in server.output()


def test_explicit_omp_num_threads_wins(launch):
    server = launch("-m", "sklearnserver", "--model_dir", IRIS, env={"OMP_NUM_THREADS": "3"})
    assert "1 worker(s), 3 thread(s) each" in server.output()
