"""docker-compose.yml, checked offline (no Docker engine on the build machines): the services
the issue asks for, their commands against our CLI, start order, healthchecks, that every
PAYOUTS_* name is a real setting, that credentials agree between services, and the tests
service that runs the integration suite against the real bitcoind."""

from __future__ import annotations

import os
import re
import urllib.parse
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import _parser as payouts_parser
from shared.infra.settings import Settings
from workers.flower import _parser as flower_parser

ROOT = Path(__file__).resolve().parents[3]
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}
LONG_RUNNING_WITH_HEALTHCHECKS = ("bitcoind", "redis", "postgres", "api", "worker", "flower")
APP_SERVICES = ("migrate", "api", "worker", "beat", "flower")


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def service(name: str) -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"][name]
    return found


_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>\w+)(?::-(?P<default>[^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` with no .env file (what a fresh `docker compose up` sees)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("default") is None:
            pytest.fail(f"${{{match.group('name')}}} has no default: `up` would need a .env")
        return match.group("default")

    return _VARIABLE.sub(replace, value)


def env(name: str) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in (service(name).get("environment") or {}).items()}


def depends(name: str) -> dict[str, str]:
    return {dep: spec["condition"] for dep, spec in (service(name).get("depends_on") or {}).items()}


def test_every_service_the_issue_asks_for_is_defined() -> None:
    expected = {"bitcoind", "redis", "postgres", "migrate", "api", "worker", "beat", "flower",
                "tests"}  # fmt: skip
    assert expected <= set(compose()["services"])


class TestBitcoind:
    def test_is_a_bitcoin_core_image_pinned_to_a_release(self) -> None:
        assert re.fullmatch(r"bitcoin/bitcoin:\d+\.\d+(\.\d+)?", service("bitcoind")["image"])

    def test_runs_regtest_with_a_fallback_fee(self) -> None:
        command = service("bitcoind")["command"]

        assert "-regtest" in command
        [fee] = [arg for arg in command if arg.startswith("-fallbackfee=")]
        assert float(fee.split("=", 1)[1]) > 0

    def test_rpc_credentials_go_to_a_config_file_not_the_command_line(self) -> None:
        bitcoind = service("bitcoind")
        start = ROOT / "docker/bitcoind/start.sh"

        assert {"BITCOIN_RPC_USER", "BITCOIN_RPC_PASSWORD"} <= set(env("bitcoind"))
        assert not any("rpcpassword" in str(arg) for arg in bitcoind["command"])
        assert bitcoind["entrypoint"] == ["/docker/start.sh"]
        assert "rpcpassword=" in start.read_text() and "exec /entrypoint.sh" in start.read_text()

    def test_the_hot_wallet_is_created_on_first_start_and_loaded_after(self) -> None:
        init = service("bitcoind-init")
        script = (ROOT / "docker/bitcoind/init-wallet.sh").read_text()
        wallet_path = urllib.parse.urlsplit(env("api")["PAYOUTS_BITCOIND_URL"]).path

        assert init["entrypoint"] == ["/docker/init-wallet.sh"]
        assert depends("bitcoind-init") == {"bitcoind": "service_healthy"}
        assert init["restart"] == "no"
        assert wallet_path == f"/wallet/{env('bitcoind-init')['BITCOIN_WALLET']}"
        wallet_rpc = re.compile(r"\b(create|load)wallet ")
        commands = [line for line in script.splitlines() if wallet_rpc.search(line)]
        assert len(commands) == 2  # create on first start, load when it exists but is not loaded
        assert all("load_on_startup=true" in line for line in commands)  # reloaded by bitcoind

    def test_mounted_scripts_exist_and_are_executable(self) -> None:
        for name in ("bitcoind", "bitcoind-init"):
            for volume in service(name)["volumes"]:
                source = volume.split(":", 1)[0]
                if source.startswith("./"):
                    for script in (ROOT / source).glob("*.sh"):
                        assert os.access(script, os.X_OK), script


def test_postgres_keeps_its_data_in_a_named_volume() -> None:
    mounts = dict(v.split(":", 1) for v in service("postgres")["volumes"])

    named = [source for source, target in mounts.items() if target == "/var/lib/postgresql/data"]
    assert named and named[0] in compose()["volumes"]


@pytest.mark.parametrize("name", LONG_RUNNING_WITH_HEALTHCHECKS)
def test_long_running_services_have_a_healthcheck(name: str) -> None:
    check = service(name)["healthcheck"]

    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1


def test_api_health_is_its_readiness() -> None:
    assert "/readyz" in " ".join(service("api")["healthcheck"]["test"])


def test_every_depends_on_condition_can_be_met() -> None:
    for name in compose()["services"]:
        for dependency, condition in depends(name).items():
            assert condition in CONDITIONS, (name, dependency)
            target = service(dependency)
            if condition == "service_healthy":
                assert "healthcheck" in target, f"{name} waits for {dependency} to be healthy"
            if condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} must be one-shot"


def test_the_app_starts_in_order() -> None:
    assert depends("migrate") == {"postgres": "service_healthy"}
    for name in ("api", "worker"):
        assert depends(name) == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "migrate": "service_completed_successfully",
            "bitcoind-init": "service_completed_successfully",
        }
    for name in ("beat", "flower"):
        assert depends(name) == {"redis": "service_healthy"}


@pytest.mark.parametrize(
    ("name", "verb"),
    [("migrate", "migrate"), ("api", "api"), ("worker", "worker"), ("beat", "beat")],
)
def test_app_commands_are_valid_payouts_command_lines(name: str, verb: str) -> None:
    command = service(name)["command"]

    assert command[:2] == ["payouts", verb]
    assert payouts_parser().parse_args(command[1:]).verb == verb


def test_flower_is_started_with_payouts_flower_on_all_interfaces() -> None:
    command = service("flower")["command"]

    assert command[:2] == ["payouts", "flower"]
    args, passthrough = flower_parser().parse_known_args(command[2:])
    assert (args.address, args.no_auth, passthrough) == ("0.0.0.0", False, [])
    assert env("flower")["PAYOUTS_FLOWER_PASSWORD"]


def test_the_api_listens_on_all_interfaces_inside_its_container() -> None:
    args = payouts_parser().parse_args(service("api")["command"][1:])

    assert args.host == "0.0.0.0"
    assert any(p.endswith(f":{args.port}") for p in service("api")["ports"])


def test_worker_can_be_scaled() -> None:
    worker = service("worker")

    assert "container_name" not in worker and "ports" not in worker


def test_published_ports_are_bound_to_localhost_only() -> None:
    for name, spec in compose()["services"].items():
        for port in spec.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)


def _payouts_names() -> set[str]:
    return {k for name in compose()["services"] for k in env(name) if k.startswith("PAYOUTS_")}


def _test_only_names() -> set[str]:
    """PAYOUTS_TEST_* names the test suite actually reads."""
    sources = (ROOT / "tests").rglob("*.py")
    return {n for p in sources for n in re.findall(r"PAYOUTS_TEST_[A-Z_]+", p.read_text())}


def test_every_payouts_name_is_a_setting_or_one_the_tests_read() -> None:
    fields = set(Settings.model_fields)
    test_only = _test_only_names()

    for name in _payouts_names():
        if name.startswith("PAYOUTS_TEST_"):
            assert name in test_only, f"{name}: no test reads it"
        else:
            assert name.removeprefix("PAYOUTS_").lower() in fields, f"{name}: not a setting"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_settings_are_valid(name: str) -> None:
    values = {k.removeprefix("PAYOUTS_").lower(): v for k, v in env(name).items()}

    settings = Settings.model_validate(values)  # types and ranges, as the process would

    assert settings.network == "regtest"


def test_only_the_services_that_use_a_secret_get_it() -> None:
    assert {n for n in APP_SERVICES if "PAYOUTS_FLOWER_PASSWORD" in env(n)} == {"flower"}
    for name in ("beat", "flower"):
        assert not {"PAYOUTS_BITCOIND_URL", "PAYOUTS_DATABASE_URL"} & set(env(name))


def test_credentials_agree_between_the_app_and_the_services() -> None:
    node = urllib.parse.urlsplit(env("api")["PAYOUTS_BITCOIND_URL"])
    db = urllib.parse.urlsplit(env("api")["PAYOUTS_DATABASE_URL"])
    rpc, pg = env("bitcoind"), env("postgres")

    assert (node.hostname, node.port) == ("bitcoind", 18443)  # regtest's RPC port
    assert (node.username, node.password) == (rpc["BITCOIN_RPC_USER"], rpc["BITCOIN_RPC_PASSWORD"])
    assert (db.hostname, db.username, db.password, db.path) == (
        "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], f"/{pg['POSTGRES_DB']}",
    )  # fmt: skip
    assert urllib.parse.urlsplit(env("api")["PAYOUTS_REDIS_URL"]).hostname == "redis"
    assert env("api")["PAYOUTS_NETWORK"] == "regtest"


class TestTestsService:
    def test_runs_the_integration_suite_only_when_asked_with_ci_rules(self) -> None:
        tests = service("tests")

        assert "tests" in tests["profiles"]
        assert tests["command"][:1] == ["pytest"] and "tests/integration" in tests["command"]
        assert env("tests")["CI"] == "true"

    def test_points_the_suite_at_the_real_bitcoind_postgres_and_redis(self) -> None:
        values = env("tests")
        node = urllib.parse.urlsplit(values["PAYOUTS_TEST_BITCOIND_URL"])

        assert node.geturl() == env("api")["PAYOUTS_BITCOIND_URL"]
        assert urllib.parse.urlsplit(values["PAYOUTS_TEST_POSTGRES_URL"]).hostname == "postgres"
        assert urllib.parse.urlsplit(values["PAYOUTS_TEST_REDIS_URL"]).hostname == "redis"
        assert depends("tests") == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "bitcoind-init": "service_completed_successfully",
        }

    def test_builds_a_dockerfile_target_that_exists(self) -> None:
        targets = set(re.findall(r"^FROM \S+ AS (\w+)", (ROOT / "Dockerfile").read_text(), re.M))
        built = {spec["build"]["target"] for spec in compose()["services"].values()
                 if "build" in spec}  # fmt: skip

        assert built == {"app", "tests"} and built <= targets


def test_the_app_image_does_not_run_as_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    app_stage = dockerfile.split("AS app", 1)[1].split("\nFROM ", 1)[0]

    assert re.search(r"^USER (?!root)\S+", app_stage, re.M)
