"""shared/health: each readiness check, the chain guard, secret masking, and the start-up gate
of `payouts api | worker | beat | flower` (which services each role refuses to start without).

Real where it is cheap: SQLite, an in-process simulated node, ports nothing listens on.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from devnode.server import RunningDevnode, start_devnode
from shared.infra.settings import Settings
from shared.ops import health
from shared.ops.health import CheckResult, Status

DEAD_REDIS = "redis://127.0.0.1:1/0"  # port 1: nothing listens


@pytest.fixture(scope="module")
def devnode() -> Iterator[RunningDevnode]:
    with start_devnode(port=0, rpcpassword="node-secret-Zq9") as node:
        yield node


def settings_for(devnode: RunningDevnode | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"database_url": "sqlite://", "redis_url": DEAD_REDIS}
    if devnode is not None:
        values["bitcoind_url"] = SecretStr(devnode.wallet_url)
    values.update(overrides)
    return Settings(**values)


def by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


class TestServiceChecks:
    def test_a_working_database_passes(self) -> None:
        assert health.check_database(settings_for(), 1).ok

    def test_an_unusable_database_names_its_setting(self, tmp_path: Path) -> None:
        settings = settings_for(database_url=f"sqlite:///{tmp_path}/no/such/dir.db")

        result = health.check_database(settings, 1)

        assert (result.status, result.setting) == (Status.FAILED, "PAYOUTS_DATABASE_URL")
        assert "unreachable" in result.detail

    def test_an_unreachable_redis_names_its_setting(self) -> None:
        result = health.check_redis(settings_for(), 1)

        assert (result.status, result.setting) == (Status.FAILED, "PAYOUTS_REDIS_URL")

    def test_an_unreachable_broker_names_the_setting_actually_in_use(self) -> None:
        own = health.check_broker(settings_for(broker_url=DEAD_REDIS), 1)
        inherited = health.check_broker(settings_for(broker_url=""), 1)

        assert (own.status, own.setting) == (Status.FAILED, "PAYOUTS_BROKER_URL")
        assert (inherited.status, inherited.setting) == (Status.FAILED, "PAYOUTS_REDIS_URL")


class TestNodeChecks:
    def test_node_wallet_and_chain_pass_on_a_matching_network(
        self, devnode: RunningDevnode
    ) -> None:
        results = by_name(health.check_node(settings_for(devnode, network="regtest"), 2))

        assert {n: r.status for n, r in results.items()} == {
            "node": Status.OK, "wallet": Status.OK, "chain": Status.OK,
        }  # fmt: skip

    @pytest.mark.parametrize("network", ["mainnet", "testnet", "signet"])
    def test_a_regtest_node_fails_the_chain_check_for_any_other_network(
        self, devnode: RunningDevnode, network: str
    ) -> None:
        chain = by_name(health.check_node(settings_for(devnode, network=network), 2))["chain"]

        assert (chain.status, chain.setting) == (Status.FAILED, "PAYOUTS_NETWORK")
        assert "'regtest'" in chain.detail and repr(network) in chain.detail

    def test_a_wallet_that_is_not_loaded_fails_the_wallet_check(
        self, devnode: RunningDevnode
    ) -> None:
        url = SecretStr(f"{devnode.url}/wallet/cold")

        results = by_name(health.check_node(settings_for(bitcoind_url=url), 2))

        assert results["node"].ok and results["wallet"].status == Status.FAILED
        assert results["wallet"].setting == "PAYOUTS_BITCOIND_URL"

    def test_wrong_credentials_fail_the_node_without_showing_the_password(
        self, devnode: RunningDevnode
    ) -> None:
        url = SecretStr(f"http://payouts:wrong-pass-Kx7@{devnode.host}:{devnode.port}/wallet/hot")

        results = by_name(health.check_node(settings_for(bitcoind_url=url), 2))

        assert results["node"].status == Status.FAILED
        assert results["wallet"].status == results["chain"].status == Status.SKIPPED
        assert "wrong-pass-Kx7" not in results["node"].detail


class ChainOnly:
    """A node that only reports which chain it is on."""

    chain = "main"

    def __init__(self, url: str, **_: object) -> None:
        self.safe_url = "http://node"

    def get_blockchain_info(self) -> dict[str, str]:
        return {"chain": ChainOnly.chain}

    def get_wallet_info(self) -> dict[str, str]:
        return {"walletname": "hot"}


@pytest.mark.parametrize(
    ("network", "accepted"),
    [
        ("mainnet", {"main"}),
        ("testnet", {"test", "testnet4"}),
        ("signet", {"signet"}),
        ("regtest", {"regtest"}),
    ],
)
def test_each_network_accepts_only_its_own_chains(
    monkeypatch: pytest.MonkeyPatch, network: str, accepted: set[str]
) -> None:
    monkeypatch.setattr(health, "NodeClient", ChainOnly)
    for chain in ("main", "test", "testnet4", "signet", "regtest"):
        ChainOnly.chain = chain
        result = by_name(health.check_node(settings_for(network=network), 1))["chain"]
        assert result.ok == (chain in accepted), (network, chain)


class TestRunChecks:
    def test_only_the_services_asked_for_are_checked(self) -> None:
        results = health.run_checks(settings_for(), timeout=1, services=["database"])

        assert [(r.name, r.status) for r in results] == [("database", Status.OK)]

    def test_every_check_is_reported_in_a_fixed_order(self, devnode: RunningDevnode) -> None:
        results = health.run_checks(settings_for(devnode), timeout=1)

        assert [r.name for r in results] == list(health.ORDER)
        assert [r.name for r in results if not r.ok] == ["redis", "broker"]

    def test_a_check_that_hangs_is_reported_failed_after_the_timeout(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        never = threading.Event()
        monkeypatch.setattr(health, "check_redis", lambda s, t: never.wait(30))

        try:
            redis_result = by_name(health.run_checks(settings_for(), timeout=0.2))["redis"]
        finally:
            never.set()

        assert redis_result.status == Status.FAILED
        assert "no answer within 0.2 s" in redis_result.detail

    def test_url_passwords_never_reach_a_detail(self, monkeypatch: pytest.MonkeyPatch) -> None:
        settings = settings_for(redis_url="redis://:redis-pw-Qm4@127.0.0.1:1/0")
        monkeypatch.setattr(
            health, "check_redis",
            lambda s, t: CheckResult("redis", Status.FAILED, "PAYOUTS_REDIS_URL",
                                     f"bad {s.redis_url}"),
        )  # fmt: skip

        [redis_result] = [r for r in health.run_checks(settings, 0.5) if r.name == "redis"]

        assert "redis-pw-Qm4" not in redis_result.detail and "***" in redis_result.detail

    def test_secrets_are_the_ones_outside_urls_the_flower_password(self) -> None:
        settings = settings_for(
            database_url="postgresql://u:p%2Fw@db/x", flower_password=SecretStr("fl-pw")
        )

        assert health.secrets_of(settings) == ["fl-pw"]


class TestMasking:
    """URL passwords are redacted where the URL has them; other secrets only as whole tokens,
    so a short or common-word password never mangles the rest of a message."""

    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            ("bad http://u:p@127.0.0.1:18443/wallet/hot",
             "bad http://u:***@127.0.0.1:18443/wallet/hot"),
            ("redis unreachable (redis://:redis@127.0.0.1:1/0): redis said no",
             "redis unreachable (redis://:***@127.0.0.1:1/0): redis said no"),
            ("postgresql://u:p%2Fw%40x@db/x?sslmode=require and amqp://g:g@[::1]:5672//",
             "postgresql://u:***@db/x?sslmode=require and amqp://g:***@[::1]:5672//"),
            ("two '@' redis://:pa@ss@HOST:6379/0", "two '@' redis://:***@HOST:6379/0"),
            ("no password http://user@host/ or https://host/p", None),
            ("no url at all: p, redis, htp", None),
        ],
    )  # fmt: skip
    def test_url_passwords_are_redacted_structurally(
        self, message: str, expected: str | None
    ) -> None:
        assert health.mask(message, []) == (message if expected is None else expected)

    @pytest.mark.parametrize("password", ["p", "redis", "http", "1"])
    def test_a_short_or_common_word_url_password_does_not_mangle_the_message(
        self, monkeypatch: pytest.MonkeyPatch, password: str
    ) -> None:
        url = f"http://payouts:{password}@127.0.0.1:1/wallet/hot"
        settings = settings_for(
            redis_url=f"redis://:{password}@127.0.0.1:1/0", bitcoind_url=SecretStr(url)
        )
        monkeypatch.setattr(
            health, "check_redis",
            lambda s, t: CheckResult("redis", Status.FAILED, "PAYOUTS_REDIS_URL",
                                     f"redis at {s.redis_url} refused http: node {url}"),
        )  # fmt: skip

        [result] = [r for r in health.run_checks(settings, 0.5) if r.name == "redis"]

        assert result.detail == (
            "redis at redis://:***@127.0.0.1:1/0 refused http: "
            "node http://payouts:***@127.0.0.1:1/wallet/hot"
        )

    @pytest.mark.parametrize(
        ("message", "expected"),
        [
            ("flower rejected 'fl' for admin", "flower rejected '***' for admin"),
            ("password=fl, retry", "password=***, retry"),
            ("fl", "***"),
            ("flower fails; fl-x and xfl stay", "flower fails; fl-x and xfl stay"),
        ],
    )
    def test_other_secrets_are_masked_only_as_whole_tokens(
        self, message: str, expected: str
    ) -> None:
        assert health.mask(message, ["fl"]) == expected


def fake_checks(monkeypatch: pytest.MonkeyPatch, failing: set[str]) -> None:
    """Make every check pass except the named ones (the node's three come from check_node)."""

    def result(name: str, setting: str) -> CheckResult:
        if name in failing:
            return CheckResult(name, Status.FAILED, setting, f"{name} is down")
        return CheckResult(name, Status.OK, setting)

    monkeypatch.setattr(health, "check_database",
                        lambda s, t: result("database", "PAYOUTS_DATABASE_URL"))
    monkeypatch.setattr(health, "check_redis", lambda s, t: result("redis", "PAYOUTS_REDIS_URL"))
    monkeypatch.setattr(health, "check_broker",
                        lambda s, t: result("broker", "PAYOUTS_BROKER_URL"))
    monkeypatch.setattr(health, "check_node", lambda s, t: [
        result("node", "PAYOUTS_BITCOIND_URL"), result("wallet", "PAYOUTS_BITCOIND_URL"),
        result("chain", "PAYOUTS_NETWORK"),
    ])  # fmt: skip


def gate(role: health.Role) -> tuple[int, str]:
    out = io.StringIO()
    code = health.start_gate(role, settings_for(), out=out)
    return code, out.getvalue()


class TestStartGate:
    @pytest.mark.parametrize("role", ["api", "worker", "beat", "flower"])
    def test_every_role_starts_when_everything_answers(
        self, monkeypatch: pytest.MonkeyPatch, role: health.Role
    ) -> None:
        fake_checks(monkeypatch, failing=set())

        assert gate(role) == (0, "")

    @pytest.mark.parametrize("role", ["api", "worker"])
    def test_a_role_that_uses_the_node_refuses_one_on_another_chain_with_exit_5(
        self, monkeypatch: pytest.MonkeyPatch, role: health.Role
    ) -> None:
        fake_checks(monkeypatch, failing={"chain"})

        code, printed = gate(role)

        assert code == health.EXIT_WRONG_NETWORK == 5
        assert printed.count("\n") == 1 and "PAYOUTS_NETWORK" in printed

    @pytest.mark.parametrize(
        ("role", "down", "setting"),
        [
            ("api", "database", "PAYOUTS_DATABASE_URL"),
            ("worker", "database", "PAYOUTS_DATABASE_URL"),
            ("worker", "redis", "PAYOUTS_REDIS_URL"),
            ("worker", "broker", "PAYOUTS_BROKER_URL"),
            ("worker", "node", "PAYOUTS_BITCOIND_URL"),
            ("worker", "wallet", "PAYOUTS_BITCOIND_URL"),
            ("beat", "broker", "PAYOUTS_BROKER_URL"),
            ("flower", "broker", "PAYOUTS_BROKER_URL"),
        ],
    )
    def test_a_required_service_down_exits_4_naming_the_setting(
        self, monkeypatch: pytest.MonkeyPatch, role: health.Role, down: str, setting: str
    ) -> None:
        fake_checks(monkeypatch, failing={down})

        code, printed = gate(role)

        assert code == health.EXIT_SERVICE_UNREACHABLE == 4
        assert printed.startswith(f"payouts {role}: cannot start: {down}")
        assert printed.count("\n") == 1 and setting in printed

    @pytest.mark.parametrize("role", ["beat", "flower"])
    def test_beat_and_flower_never_ask_the_node_so_its_chain_cannot_stop_them(
        self, monkeypatch: pytest.MonkeyPatch, role: health.Role
    ) -> None:
        fake_checks(monkeypatch, failing={"chain", "node", "database", "redis"})

        assert gate(role) == (0, "")

    @pytest.mark.parametrize(
        ("role", "down"),
        [("api", "redis"), ("api", "broker"), ("api", "node"), ("api", "wallet")],
    )
    def test_a_service_the_role_can_work_without_only_warns(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        role: health.Role, down: str,
    ) -> None:  # fmt: skip
        fake_checks(monkeypatch, failing={down})

        assert gate(role) == (0, "")
        assert f"starting without {down}" in caplog.text
