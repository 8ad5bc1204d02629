"""A Redis the chaos suite may flush and restart without touching the machine's shared one.

`cli.embedded.EmbeddedRedis` picks a new port each time; a restart must come back on the
same port, so the workers, beat and the API (configured once, at start) reconnect to it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from cli.embedded import free_port, redis_reachable
from cli.processes import wait_until


class RestartableRedis:
    """A throwaway `redis-server` on a fixed loopback port; nothing is saved to disk, so a
    restart comes back empty (locks, queued and unacked Celery messages all gone)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the chaos suite needs a redis-server binary on PATH")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [
                self.binary, "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(lambda: redis_reachable(self.url), 10, f"redis-server on port {self.port}")

    def crash(self) -> None:
        """SIGKILL: what an OOM kill or a host reboot does to an unpersisted Redis."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)

    def restart(self) -> None:
        self.crash()
        self.start()

    def flushall(self) -> None:
        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
