"""`python -m bench.load_client`: create+approve payouts over HTTP at a fixed concurrency.

Runs as its own process so its CPU and GIL are not the API's. Keys come from the environment
(BENCH_BACKEND_KEY, BENCH_APPROVER_KEY) to keep them off the command line. Prints one JSON
object on stdout: per-request latencies summarised, requests/s, and any non-2xx answers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from bench.stats import percentile
from cli.addresses import external_address

REQUEST_TIMEOUT_SECONDS = 30


class Load:
    def __init__(self, base_url: str, backend_key: str, approver_key: str) -> None:
        self.base_url = base_url
        self.backend = {"Authorization": f"Bearer {backend_key}"}
        self.approver = {"Authorization": f"Bearer {approver_key}"}
        self.local = threading.local()
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = {"create": [], "approve": []}
        self.errors: Counter[str] = Counter()

    def reset(self) -> None:
        with self.lock:
            self.latencies = {"create": [], "approve": []}
            self.errors.clear()

    def _client(self) -> httpx.Client:
        # One keep-alive connection per thread, like a real backend's connection pool.
        client = getattr(self.local, "client", None)
        if client is None:
            client = httpx.Client(base_url=self.base_url, timeout=REQUEST_TIMEOUT_SECONDS)
            self.local.client = client
        return client

    def _timed(self, kind: str, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            reply = self._client().request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            with self.lock:
                self.errors[f"{kind} {type(exc).__name__}"] += 1
            return None
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self.lock:
            self.latencies[kind].append(elapsed_ms)
            if reply.status_code >= 300:
                self.errors[f"{kind} HTTP {reply.status_code}"] += 1
        return reply

    def create_and_approve(self, destination: str) -> None:
        made = self._timed(
            "create", "POST", "/v1/payouts",
            json={"destination": destination, "amount_sats": 10_000},
            headers={**self.backend, "Idempotency-Key": uuid.uuid4().hex},
        )  # fmt: skip
        if made is None or made.status_code != 201:
            return
        self._timed("approve", "POST", f"/v1/payouts/{made.json()['id']}/approve",
                    headers=self.approver)


def run(base_url: str, pairs: int, concurrency: int) -> dict[str, Any]:
    load = Load(base_url, os.environ["BENCH_BACKEND_KEY"], os.environ["BENCH_APPROVER_KEY"])
    # Addresses are made before the clock starts: key generation is the client's cost.
    destinations = [external_address("regtest") for _ in range(pairs + concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        # Warm-up, not counted: opens every thread's connection and the API's DB pool.
        list(pool.map(load.create_and_approve, destinations[pairs:]))
        load.reset()
        started = time.perf_counter()
        list(pool.map(load.create_and_approve, destinations[:pairs]))
        seconds = time.perf_counter() - started
    everything = load.latencies["create"] + load.latencies["approve"]
    result: dict[str, Any] = {
        "pairs": pairs,
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": len(everything),
        "requests_per_second": len(everything) / seconds,
        "errors": dict(load.errors),
    }
    for kind, values in [("all", everything), *load.latencies.items()]:
        if values:
            result[f"{kind}_p50_ms"] = percentile(values, 50)
            result[f"{kind}_p99_ms"] = percentile(values, 99)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load_client")
    parser.add_argument("--base-url", required=True, help="the API, e.g. http://127.0.0.1:8000")
    parser.add_argument("--pairs", type=int, required=True, help="create+approve pairs to send")
    parser.add_argument("--concurrency", type=int, required=True, help="requests in flight")
    args = parser.parse_args(argv)
    if not args.base_url.startswith("http://127.0.0.1:"):
        parser.error("the load client only talks to 127.0.0.1")
    print(json.dumps(run(args.base_url, args.pairs, args.concurrency)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
