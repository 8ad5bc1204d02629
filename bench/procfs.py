"""Peak resident memory (VmHWM) and CPU time of a process and its children, from /proc
(Linux only)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class PeakRss:
    pid: int
    role: str  # "main" or "child" (Celery prefork's pool process runs the tasks)
    mb: float


def vm_hwm_kb(pid: int) -> int | None:
    """The process's high-water mark of resident memory, or None when it is gone."""
    try:
        status = (PROC / str(pid) / "status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the ")" that closes the command name (which may contain spaces): state,
    # ppid, ... so index i here is field i + 3 of proc(5).
    return stat.rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time this process has used so far (0 when it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def children(pid: int) -> list[int]:
    """Direct children. Scans /proc rather than relying on /proc/<pid>/task/*/children, which
    needs a kernel option that containers do not always have."""
    found = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def process_tree_peaks(pid: int) -> list[PeakRss]:
    peaks = []
    main = vm_hwm_kb(pid)
    if main is not None:
        peaks.append(PeakRss(pid, "main", main / 1024))
    for child in children(pid):
        kb = vm_hwm_kb(child)
        if kb is not None:
            peaks.append(PeakRss(child, "child", kb / 1024))
    return peaks


def largest(peaks: list[PeakRss]) -> PeakRss | None:
    return max(peaks, key=lambda p: p.mb, default=None)


class CpuMeter:
    """CPU seconds used by named groups of processes between `start()` and `per_item()`.

    Groups are re-resolved at both ends (a pool child or a database backend may appear
    during the run); a process that appeared counts from zero.
    """

    def __init__(self, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.groups = groups
        self.started: dict[str, dict[int, float]] = {}

    def _snapshot(self) -> dict[str, dict[int, float]]:
        return {name: {pid: cpu_seconds(pid) for pid in resolve()}
                for name, resolve in self.groups.items()}

    def start(self) -> None:
        self.started = self._snapshot()

    def per_item(self, items: int) -> dict[str, float]:
        """CPU milliseconds per item, by group."""
        result = {}
        for name, now in self._snapshot().items():
            before = self.started.get(name, {})
            used = sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in now.items())
            result[name] = used * 1000 / items
        return result


def with_children(pids: list[int]) -> list[int]:
    return [q for p in pids for q in (p, *children(p))]
