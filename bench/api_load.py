"""Section 4: the API process on PostgreSQL under create+approve load from another process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procfs import CpuMeter, largest, process_tree_peaks
from bench.services import database_backends
from cli.embedded import free_port
from cli.processes import ManagedProcess, api_argv, wait_for_http
from shared.infra.db import session_scope
from shared.intake.api_keys import create_api_key

# A bound on the load client's whole run; at tens of ms per request even the largest sane
# --api-requests finishes far inside it.
LOAD_CLIENT_TIMEOUT_SECONDS = 600


@dataclass(frozen=True)
class ApiResult:
    load: dict[str, Any]
    api_rss_mb: float


def _mint_keys() -> dict[str, str]:
    with session_scope() as session:
        return {
            "BENCH_BACKEND_KEY": create_api_key(session, "bench-backend-http", "payouts:create"),
            "BENCH_APPROVER_KEY": create_api_key(session, "bench-approver-http",
                                                 "payouts:approve"),
        }


def run_api_load(
    pairs: int, concurrency: int, env: Mapping[str, str], workdir: Path
) -> ApiResult:
    keys = _mint_keys()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    # The access log is part of the API's cost in production, so it stays on.
    api = ManagedProcess("api", api_argv(port), env, workdir)
    try:
        wait_for_http(api, f"{base_url}/healthz")
        # Includes the load client's untimed warm-up; a small share at the default size.
        meter = CpuMeter({"api": lambda: [api.pid], "postgres": database_backends})
        meter.start()
        argv = [sys.executable, "-m", "bench.load_client", "--base-url", base_url,
                "--pairs", str(pairs), "--concurrency", str(concurrency)]  # fmt: skip
        done = subprocess.run(
            argv, env={**env, **keys}, capture_output=True, text=True, check=False,
            timeout=LOAD_CLIENT_TIMEOUT_SECONDS,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"load client failed ({done.returncode}):\n{done.stderr[-2000:]}")
        load: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        load["cpu_ms_per_request"] = meter.per_item(max(1, load["requests"]))
        peak = largest(process_tree_peaks(api.pid))
    finally:
        api.stop()
    return ApiResult(load=load, api_rss_mb=peak.mb if peak else float("nan"))
