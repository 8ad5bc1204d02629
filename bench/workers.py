"""Starting W Celery worker processes for a run, with the flags the real system uses."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.procfs import PeakRss, largest, process_tree_peaks
from cli.processes import ManagedProcess, wait_for_worker_ready, worker_argv

PIPELINE_APP = "workers.celery_app"
NOOP_APP = "bench.noop_tasks"


def argv_for(app_module: str, hostname: str) -> list[str]:
    """`cli.processes.worker_argv` (concurrency 1, the real queues, same flags) with only the
    Celery app swapped, so the baseline cannot drift from how real workers are started."""
    argv = worker_argv(hostname)
    position = argv.index("-A") + 1
    if argv[position] != PIPELINE_APP:
        raise RuntimeError(f"worker_argv changed shape: {argv}")
    argv[position] = app_module
    return argv


@dataclass
class WorkerPool:
    processes: list[ManagedProcess]

    def peak_rss(self) -> PeakRss | None:
        """The largest VmHWM among every worker's main and pool-child process."""
        peaks = [p for proc in self.processes for p in process_tree_peaks(proc.pid)]
        return largest(peaks)

    def peak_rss_by_role(self) -> dict[str, float]:
        """Largest VmHWM (MB) among the main processes and among the pool children."""
        result: dict[str, float] = {}
        for proc in self.processes:
            for peak in process_tree_peaks(proc.pid):
                result[peak.role] = max(result.get(peak.role, 0.0), peak.mb)
        return result

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.processes]


@contextmanager
def running_workers(
    app_module: str, count: int, env: Mapping[str, str], workdir: Path
) -> Iterator[WorkerPool]:
    tag = uuid.uuid4().hex[:4]
    name = "noop" if app_module == NOOP_APP else "pipeline"
    procs: list[ManagedProcess] = []
    try:
        for i in range(1, count + 1):
            proc_name = f"{name}-w{count}-{i}-{tag}"
            procs.append(ManagedProcess(proc_name, argv_for(app_module, f"{proc_name}@%h"),
                                        env, workdir))
        for proc in procs:
            wait_for_worker_ready(proc)
        yield WorkerPool(procs)
    finally:
        for proc in procs:
            proc.stop()
