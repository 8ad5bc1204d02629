"""`payouts devnode` as its own process: prints the URL, serves bitcoind clients, stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from cli.regtest_node import RegtestNode


def test_cli_serves_until_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "devnode", "--port", "0", "--wallet", "ops",
         "--rpcpassword", "pw123", "--premine", "101"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # blocks until the node is listening
        name, _, url = line.partition("=")
        assert name == "PAYOUTS_BITCOIND_URL"
        assert url.startswith("http://payouts:pw123@127.0.0.1:") and url.endswith("/wallet/ops")
        node = RegtestNode(url, timeout=10)
        assert node.get_blockchain_info()["chain"] == "regtest"
        assert node.get_balance_sats() == 50 * 100_000_000
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            assert "pw123" not in proc.stderr.read()
            proc.stderr.close()
