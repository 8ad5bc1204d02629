"""Embedded services for `payouts demo`: a Redis when none is reachable on the default port."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_reachable(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


class EmbeddedRedis:
    """A throwaway `redis-server` on a free loopback port, nothing saved to disk."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "no Redis is reachable at 127.0.0.1:6379 and no redis-server binary is on PATH; "
                "install Redis (apt-get install redis-server) or set PAYOUTS_REDIS_URL"
            )
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not redis_reachable(self.url):
            if time.monotonic() > deadline or self._proc.poll() is not None:
                self.stop()
                raise RuntimeError("the embedded redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def choose_redis(workdir: Path) -> tuple[str, EmbeddedRedis | None]:
    """The machine's Redis (database 15) when reachable, else an embedded one."""
    if redis_reachable(DEFAULT_REDIS_URL):
        return DEFAULT_REDIS_URL, None
    embedded = EmbeddedRedis(workdir)
    return embedded.url, embedded
