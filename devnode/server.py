"""The HTTP JSON-RPC front end, speaking bitcoind's dialect of it.

- HTTP/1.1 with keep-alive, POST only, basic auth (401 + WWW-Authenticate otherwise).
- `/` and `/wallet/<name>` endpoints; wallet RPCs on `/` use the only loaded wallet.
- JSON-RPC 1.0/1.1 replies `{"result", "error", "id"}` with HTTP 500 on error (404 for
  an unknown method, 400 for an invalid request), JSON-RPC 2.0 replies always 200, batches
  always 200 — the same as bitcoind's httprpc.cpp.
- One thread per connection; every RPC runs under the node's single lock. Injected
  latency is slept after the call and outside that lock, so other calls keep flowing; a
  held call (devnode_hold) waits before it runs, and never runs if its caller has gone.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import select
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from devnode import rpc_chain, rpc_devnode, rpc_rawtx, rpc_send, rpc_wallet  # noqa: F401
from devnode.errors import (
    RPC_INVALID_REQUEST,
    RPC_METHOD_NOT_FOUND,
    RPC_MISC_ERROR,
    RPC_PARSE_ERROR,
    RPCError,
)
from devnode.node import DEFAULT_FALLBACK_FEE_SAT_KVB, Node
from devnode.registry import Context, call, encode

log = logging.getLogger("devnode")


@dataclass
class Reply:
    body: dict[str, Any]
    status: int
    dropped: bool = False
    latency: float = 0.0
    errors: list[int] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], node: Node, auth: bytes) -> None:
        super().__init__(address, _Handler)
        self.node = node
        self.auth = auth
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout beat our injected latency) or a test that closed
        # the connection is normal here; only report real errors.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "devnode/0.1"
    timeout = 300  # idle keep-alive connections are closed after this
    # The status line and headers are flushed before the body, as two small writes. With
    # Nagle on, the body waits for the client's delayed ACK of the headers: every call on a
    # kept-alive connection took ~40 ms. bitcoind's libevent server does not wait like that.
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        return  # one debug line per request is written by do_POST instead

    def _send(self, status: int, body: bytes, content_type: str | None,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (stdlib naming)
        self._send(405, b"JSONRPC server handles only POST requests", "text/html")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, self.server.auth)

    def do_POST(self) -> None:  # noqa: N802 (stdlib naming)
        started = time.monotonic()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not self._authorized():
            log.debug("401 from %s", self.client_address[0])
            self._send(401, b"<html><body>401 Unauthorized</body></html>", "text/html",
                       {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
            return
        path = urllib.parse.urlsplit(self.path).path
        if path in ("", "/"):
            wallet: str | None = None
        elif path.startswith("/wallet/"):
            wallet = urllib.parse.unquote(path[len("/wallet/"):])
        else:
            self._send(404, b"", None)
            return
        methods: list[str] = []
        try:
            request = json.loads(raw, parse_float=Decimal)
        except ValueError:
            request = None
            reply = Reply(_error_body(None, RPC_PARSE_ERROR, "Parse error", False), 500)
            body = encode(reply.body)
        else:
            if isinstance(request, list):
                replies = [self._one(item, wallet, methods) for item in request]
                reply = Reply({}, 200, any(r.dropped for r in replies),
                              max((r.latency for r in replies), default=0.0))
                body = "[" + ",".join(encode(r.body) for r in replies) + "]"
            elif isinstance(request, dict):
                reply = self._one(request, wallet, methods)
                body = encode(reply.body)
            else:
                reply = Reply(_error_body(None, RPC_PARSE_ERROR, "Top-level object parse error",
                                          False), 500)
                body = encode(reply.body)
        if reply.latency > 0:
            time.sleep(reply.latency)  # outside the node lock: other requests proceed
        log.debug("%s wallet=%s status=%s%s %.1fms", ",".join(methods) or "-", wallet,
                  reply.status, " DROPPED" if reply.dropped else "",
                  (time.monotonic() - started) * 1000)
        if reply.dropped:
            # The call happened; the caller never learns it. Close without any reply.
            self.close_connection = True
            return
        self._send(reply.status, body.encode(), "application/json")

    def _wait_unless_caller_leaves(self, seconds: float) -> bool:
        """Sleep up to `seconds` outside the node lock; True as soon as the client has closed
        its end (a killed process's socket reads EOF), so a test can kill a worker at exactly
        "request not yet sent" without the held call running later."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        return True
                except OSError:
                    return True
                time.sleep(0.05)  # pipelined bytes, not a close: keep holding
        return False

    def _one(self, request: Any, wallet: str | None, methods: list[str]) -> Reply:
        if not isinstance(request, dict):
            return Reply(_error_body(None, RPC_INVALID_REQUEST, "Invalid Request object", False),
                         400)
        rid = request.get("id")
        v2 = request.get("jsonrpc") == "2.0"
        method = request.get("method")
        if not isinstance(method, str):
            return _reply_error(rid, RPC_INVALID_REQUEST, "Method must be a string", v2)
        methods.append(method)
        params = request.get("params")
        if params is None:
            params = []
        if not isinstance(params, (list, dict)):
            return _reply_error(rid, RPC_INVALID_REQUEST, "Params must be an array or object", v2)
        node = self.server.node
        faults = node.faults
        faults.record_call(method)
        hold = faults.take_hold(method)
        if hold > 0 and self._wait_unless_caller_leaves(hold):
            # The caller died while its request was held: to the node it never arrived.
            faults.record_abandoned(method)
            return Reply(_error_body(rid, RPC_MISC_ERROR, "caller gone", v2), 500, dropped=True)
        armed = faults.take_failure(method)
        if armed is not None:
            reply = _reply_error(rid, armed.code, armed.message, v2)
        else:
            try:
                with node.lock:
                    result = call(Context(node, wallet), method, params)
                reply = Reply(_result_body(rid, result, v2), 200)
            except RPCError as exc:
                reply = _reply_error(rid, exc.code, exc.message, v2)
            except Exception as exc:  # a bug here must still answer like bitcoind would
                log.exception("devnode: %s failed", method)
                reply = _reply_error(rid, RPC_MISC_ERROR, str(exc) or type(exc).__name__, v2)
        reply.latency = faults.latency_for(method)
        reply.dropped = faults.take_drop(method)
        return reply


def _result_body(rid: Any, result: Any, v2: bool) -> dict[str, Any]:
    if v2:
        return {"jsonrpc": "2.0", "result": result, "id": rid}
    return {"result": result, "error": None, "id": rid}


def _error_body(rid: Any, code: int, message: str, v2: bool) -> dict[str, Any]:
    error = {"code": code, "message": message}
    if v2:
        return {"jsonrpc": "2.0", "error": error, "id": rid}
    return {"result": None, "error": error, "id": rid}


def _reply_error(rid: Any, code: int, message: str, v2: bool) -> Reply:
    status = 200
    if not v2:
        status = {RPC_INVALID_REQUEST: 400, RPC_METHOD_NOT_FOUND: 404}.get(code, 500)
    return Reply(_error_body(rid, code, message, v2), status, errors=[code])


class RunningDevnode:
    """A devnode serving in a daemon thread; `with start_devnode() as dn:` stops it."""

    def __init__(self, server: _Server, thread: threading.Thread, rpcuser: str,
                 rpcpassword: str, wallet: str) -> None:
        self._server = server
        self._thread = thread
        self.node = server.node
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])
        self.rpcuser = rpcuser
        self.rpcpassword = rpcpassword
        self.wallet = wallet

    @property
    def url(self) -> str:
        user = urllib.parse.quote(self.rpcuser, safe="")
        password = urllib.parse.quote(self.rpcpassword, safe="")
        return f"http://{user}:{password}@{self.host}:{self.port}"

    @property
    def wallet_url(self) -> str:
        return f"{self.url}/wallet/{urllib.parse.quote(self.wallet, safe='')}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningDevnode:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_devnode(host: str = "127.0.0.1", port: int = 0, rpcuser: str = "payouts",
                  rpcpassword: str = "payouts", wallet: str = "hot", *,
                  fallback_fee_sat_kvb: int = DEFAULT_FALLBACK_FEE_SAT_KVB,
                  full_rbf: bool = True) -> RunningDevnode:
    """Start a fresh regtest node with wallet `wallet` loaded; port 0 picks a free port."""
    node = Node(fallback_fee_sat_kvb=fallback_fee_sat_kvb, full_rbf=full_rbf)
    if wallet:
        node.create_wallet(wallet)
    server = _Server((host, port), node, f"{rpcuser}:{rpcpassword}".encode())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name=f"devnode-{server.server_address[1]!r}", daemon=True)
    thread.start()
    return RunningDevnode(server, thread, rpcuser, rpcpassword, wallet)
