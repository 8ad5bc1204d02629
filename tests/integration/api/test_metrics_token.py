"""PAYOUTS_METRICS_TOKEN over real HTTP: /metrics answers 401 without it, and the token
never reaches the server's log."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.api.conftest import ApiServer, bearer, start_api

pytestmark = pytest.mark.integration

TOKEN = "scrape-9f2c4e7a1b3d5f60"


@pytest.fixture(scope="module")
def metrics_server(
    server_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    env = {**server_env, "PAYOUTS_METRICS_TOKEN": TOKEN, "PAYOUTS_LOG_LEVEL": "DEBUG"}
    server = start_api(env, tmp_path_factory.mktemp("api-metrics"), "api-metrics")
    yield server
    server.process.stop()


def test_metrics_need_the_token_and_it_is_never_logged(
    metrics_server: ApiServer, keys: dict[str, str]
) -> None:
    with metrics_server.client() as client:
        refused = [
            client.get("/metrics"),
            client.get("/metrics", headers=bearer(TOKEN[:-1])),
            client.get("/metrics", headers=bearer(keys["admin"])),
        ]
        scraped = client.get("/metrics", headers=bearer(TOKEN))
        health = client.get("/healthz")

    assert [r.status_code for r in refused] == [401, 401, 401]
    assert all(r.headers["www-authenticate"] == "Bearer" for r in refused)
    assert all(TOKEN not in r.text for r in refused)
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    assert "payouts_by_state" in scraped.text
    assert health.status_code == 200  # the probes stay open
    log = metrics_server.log()
    assert "GET /metrics" in log
    assert TOKEN not in log and TOKEN[:-1] not in log
