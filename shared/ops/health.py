"""Readiness (`/readyz`) and the start-up gate of `payouts api | worker | beat | flower`.

The same checks serve both: the database answers `select 1`, Redis answers PING, the broker
accepts a connection, the node answers `getblockchaininfo`, the wallet in the URL is loaded
(`getwalletinfo`), and the node's chain is the one PAYOUTS_NETWORK names. The last one is the
guard that keeps a regtest configuration from ever touching mainnet and vice versa: every
process that talks to the node (API, worker) refuses to start when it fails.

Every detail that reaches an operator names the PAYOUTS_* setting to fix and never a secret
(URL passwords are redacted structurally, the Flower password where it stands as a word;
the node client already redacts its URL).
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, TextIO

import redis
from kombu import Connection
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from shared.infra.settings import Settings
from shared.node import NodeClient
from shared.node.client import redact
from shared.node.errors import NodeError

log = logging.getLogger(__name__)

# Exit codes of `payouts api | worker | beat | flower`. Taken already: 1 a crash, 2 a
# command-line or settings error, 3 the API's port in use (uvicorn's start-up failure).
EXIT_SERVICE_UNREACHABLE = 4
EXIT_WRONG_NETWORK = 5

# What `getblockchaininfo.chain` says on each network. Bitcoin Core 28 calls its newer test
# network "testnet4"; its addresses are testnet's, so PAYOUTS_NETWORK=testnet accepts it.
CHAINS_OF_NETWORK: dict[str, frozenset[str]] = {
    "mainnet": frozenset({"main"}),
    "testnet": frozenset({"test", "testnet4"}),
    "signet": frozenset({"signet"}),
    "regtest": frozenset({"regtest"}),
}

# A readiness probe must answer well inside a typical probe timeout (Kubernetes: 1 s default,
# compose healthchecks here: 5 s); start-up can afford a little more.
READY_TIMEOUT_SECONDS = 3.0
STARTUP_TIMEOUT_SECONDS = 5.0

Role = Literal["api", "worker", "beat", "flower"]

# The services each process talks to: what its start-up gate checks. Beat only publishes and
# Flower only watches the broker, so neither asks the node anything.
USES: dict[Role, frozenset[str]] = {
    "api": frozenset({"database", "redis", "broker", "node"}),
    "worker": frozenset({"database", "redis", "broker", "node"}),
    "beat": frozenset({"broker"}),
    "flower": frozenset({"broker"}),
}
# Of those, the ones it cannot do its job without. The API without a broker or node still
# takes and approves payouts (the sweeper publishes later; manual signing waits for the node),
# so for the API those are warnings. A worker signs and sends: it needs everything. Whoever
# talks to the node refuses to start when the node answers from another chain.
REQUIRED: dict[Role, frozenset[str]] = {
    "api": frozenset({"database"}),
    "worker": frozenset({"database", "redis", "broker", "node", "wallet"}),
    "beat": frozenset({"broker"}),
    "flower": frozenset({"broker"}),
}


class Status(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # not checked: what it depends on failed first


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: Status
    setting: str  # the PAYOUTS_* variable to fix when this fails
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def describe(self) -> str:
        return f"{self.name}: {self.detail} (check {self.setting})"


# A URL in free text: a scheme, "://", and its authority (up to the path, query, fragment
# or the end of the token). `redact` hides the password in the authority's userinfo.
_URL_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#]*")
# What may stand right before / after a secret for it to count as a whole token.
_TOKEN_BEFORE = r"(?<![^\s'\"(\[{<=,])"
_TOKEN_AFTER = r"(?![^\s'\")\]}>,;])"


def secrets_of(settings: Settings) -> list[str]:
    """The secrets the settings hold outside URLs (the Flower password), to mask in anything
    shown to an operator. URL passwords need no list: `mask` redacts every URL's password."""
    return [s for s in [settings.flower_password.get_secret_value()] if s]


def mask(message: str, secrets: Iterable[str]) -> str:
    """`message` with the password of every URL in it replaced (structurally, so a short or
    common-word password cannot touch the rest of the text), and each of `secrets` replaced
    where it stands as a whole token (delimited by whitespace, quotes, brackets, '=', ',')."""
    message = _URL_AUTHORITY.sub(lambda m: redact(m.group(0)), message)
    for secret in secrets:
        pattern = _TOKEN_BEFORE + re.escape(secret) + _TOKEN_AFTER
        message = re.sub(pattern, "***", message)
    return message


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy wraps the driver error and appends the SQL and a help link; the driver's own
    # first line is the useful part.
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def check_database(settings: Settings, timeout: float) -> CheckResult:
    setting = "PAYOUTS_DATABASE_URL"
    url = settings.database_url
    # A throwaway engine with a connect timeout: the app's pool would wait for the OS's TCP
    # timeout on a blackholed host, and must not be disturbed by probes.
    args = {"connect_timeout": max(1, int(timeout))} if url.startswith("postgresql") else {}
    engine = create_engine(url, poolclass=NullPool, connect_args=args)
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # any driver error means "not usable"
        return CheckResult("database", Status.FAILED, setting, f"unreachable ({_first_line(exc)})")
    finally:
        engine.dispose()
    return CheckResult("database", Status.OK, setting)


def check_redis(settings: Settings, timeout: float) -> CheckResult:
    setting = "PAYOUTS_REDIS_URL"
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),  # one honest answer, within the timeout
    )
    try:
        client.ping()
    except Exception as exc:
        return CheckResult("redis", Status.FAILED, setting, f"unreachable ({_first_line(exc)})")
    finally:
        client.close()
    return CheckResult("redis", Status.OK, setting)


def check_broker(settings: Settings, timeout: float) -> CheckResult:
    # An empty PAYOUTS_BROKER_URL means "use PAYOUTS_REDIS_URL": name the one actually used.
    setting = setting_of("broker", settings)
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    try:
        with Connection(
            settings.effective_broker_url, connect_timeout=timeout, transport_options=options
        ) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, interval_step=0, timeout=timeout
            )
    except Exception as exc:
        return CheckResult("broker", Status.FAILED, setting, f"unreachable ({_first_line(exc)})")
    return CheckResult("broker", Status.OK, setting)


def check_node(settings: Settings, timeout: float) -> list[CheckResult]:
    """node reachable → wallet loaded, and chain == PAYOUTS_NETWORK."""
    url_setting = "PAYOUTS_BITCOIND_URL"
    try:
        node = NodeClient(settings.bitcoind_url.get_secret_value(), timeout=timeout, read_retries=0)
        chain = str(node.get_blockchain_info().get("chain", ""))
    except (NodeError, ValueError) as exc:
        skipped = "not checked: the node did not answer"
        return [
            CheckResult("node", Status.FAILED, url_setting, f"unusable ({exc})"),
            CheckResult("wallet", Status.SKIPPED, url_setting, skipped),
            CheckResult("chain", Status.SKIPPED, "PAYOUTS_NETWORK", skipped),
        ]
    results = [CheckResult("node", Status.OK, url_setting, f"chain {chain}")]
    if chain in CHAINS_OF_NETWORK[settings.network]:
        results.append(CheckResult("chain", Status.OK, "PAYOUTS_NETWORK", chain))
    else:
        detail = (
            f"the node at {node.safe_url} is on chain {chain!r} but PAYOUTS_NETWORK is "
            f"{settings.network!r}"
        )
        results.append(CheckResult("chain", Status.FAILED, "PAYOUTS_NETWORK", detail))
    try:
        wallet = node.get_wallet_info().get("walletname", "")
        results.append(CheckResult("wallet", Status.OK, url_setting, f"wallet {wallet!r} loaded"))
    except NodeError as exc:
        detail = f"no usable wallet at {node.safe_url} ({exc}); name it as /wallet/<name>"
        results.append(CheckResult("wallet", Status.FAILED, url_setting, detail))
    return results


# Each check and the results it yields, in report order; they run concurrently.
CHECKS: tuple[tuple[tuple[str, ...], Callable[[Settings, float], list[CheckResult]]], ...] = (
    (("database",), lambda s, t: [check_database(s, t)]),
    (("redis",), lambda s, t: [check_redis(s, t)]),
    (("broker",), lambda s, t: [check_broker(s, t)]),
    (("node", "wallet", "chain"), lambda s, t: check_node(s, t)),
)
ORDER = [name for names, _ in CHECKS for name in names]


def setting_of(name: str, settings: Settings) -> str:
    if name == "broker":
        return "PAYOUTS_BROKER_URL" if settings.broker_url else "PAYOUTS_REDIS_URL"
    if name == "chain":
        return "PAYOUTS_NETWORK"
    return {"database": "PAYOUTS_DATABASE_URL", "redis": "PAYOUTS_REDIS_URL"}.get(
        name, "PAYOUTS_BITCOIND_URL"
    )


def run_checks(
    settings: Settings,
    timeout: float = READY_TIMEOUT_SECONDS,
    services: Iterable[str] = ("database", "redis", "broker", "node"),
) -> list[CheckResult]:
    """The checks of `services` at once, each bounded by `timeout`; one that overruns counts
    as failed. "node" includes its wallet and chain checks."""
    wanted = set(services)
    checks = [(names, check) for names, check in CHECKS if names[0] in wanted]
    results: list[CheckResult] = []
    pool = concurrent.futures.ThreadPoolExecutor(len(checks), thread_name_prefix="health")
    try:
        futures = {pool.submit(check, settings, timeout): names for names, check in checks}
        done, late = concurrent.futures.wait(futures, timeout=timeout + 1)
        for future in done:
            results += future.result()
        for future in late:
            first, *dependent = futures[future]
            detail = f"no answer within {timeout:g} s"
            results.append(CheckResult(first, Status.FAILED, setting_of(first, settings), detail))
            results += [
                CheckResult(n, Status.SKIPPED, setting_of(n, settings), detail) for n in dependent
            ]
    finally:
        # Never wait for a stuck driver: its thread ends at its own socket timeout.
        pool.shutdown(wait=False, cancel_futures=True)
    hidden = secrets_of(settings)
    masked = [CheckResult(r.name, r.status, r.setting, mask(r.detail, hidden)) for r in results]
    return sorted(masked, key=lambda r: ORDER.index(r.name))


def start_gate(
    role: Role,
    settings: Settings,
    *,
    timeout: float = STARTUP_TIMEOUT_SECONDS,
    out: TextIO | None = None,
) -> int:
    """0 when `payouts <role>` may start. Otherwise prints one line naming the setting to fix
    and returns the exit code to leave with."""
    out = out or sys.stderr
    results = run_checks(settings, timeout, USES[role])
    chain = next((r for r in results if r.name == "chain"), None)
    if chain is not None and chain.status == Status.FAILED:
        print(f"payouts {role}: refusing to start: {chain.describe()}", file=out, flush=True)
        return EXIT_WRONG_NETWORK
    missing = [r for r in results if r.name in REQUIRED[role] and r.status != Status.OK]
    if missing:
        # A skipped check is implied by the failure it depends on; name only the cause.
        causes = [r for r in missing if r.status == Status.FAILED] or missing
        problems = "; ".join(r.describe() for r in causes)
        print(f"payouts {role}: cannot start: {problems}", file=out, flush=True)
        return EXIT_SERVICE_UNREACHABLE
    for result in results:
        if result.status == Status.FAILED:
            log.warning("starting without %s", result.describe())
    return 0
