"""How many threads each worker's frameworks may use: the container's CPUs over the workers.

Sized before any model loads. Oversubscription is costly here: 4 processes of 2 threads on 2
cores ran xgboost about 15x and torch about 10x slower than 1 thread each."""

from __future__ import annotations

import math
import os
from pathlib import Path

# Read by OpenMP, OpenBLAS, MKL, BLIS, Accelerate and numexpr when they initialise.
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
CGROUP = Path("/sys/fs/cgroup")


def available_cpus(cgroup_root: Path = CGROUP) -> float:
    """cgroup v2 `cpu.max`, then cgroup v1's CFS quota, then the CPUs this process may run on."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_v2_quota(cgroup_root) or _cgroup_v1_quota(cgroup_root)
    return min(quota, affinity) if quota else float(affinity or 1)


def _cgroup_v2_quota(root: Path) -> float | None:
    try:
        limit, period = (root / "cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if limit == "max" else int(limit) / int(period)


def _cgroup_v1_quota(root: Path) -> float | None:
    for folder in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota = int((root / folder / "cpu.cfs_quota_us").read_text())
            period = int((root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


def threads_per_worker(workers: int, cpus: float | None = None) -> int:
    cpus = available_cpus() if cpus is None else cpus
    return max(1, math.floor(cpus / max(1, workers)))


def configure_threads(workers: int) -> int:
    """Set every thread-pool variable the user has not set, and resize pools already loaded."""
    threads = threads_per_worker(workers)
    for name in THREAD_VARIABLES:
        if not os.environ.get(name):
            os.environ[name] = str(threads)
    threads = int(os.environ["OMP_NUM_THREADS"])
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return threads
    threadpool_limits(threads)
    return threads
