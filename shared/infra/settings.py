"""Runtime settings, read from `PAYOUTS_*` environment variables (docs/architecture.md §12).

Defaults work on a developer machine (SQLite file, local Redis, the simulated regtest node on
its default port). Production values are documented in the README.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Network = Literal["mainnet", "testnet", "signet", "regtest"]

# Outputs below this are non-standard for P2PKH at the default dust relay fee; Bitcoin Core
# refuses to relay them, so we refuse to queue them.
DUST_LIMIT_SATS = 546


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYOUTS_", extra="ignore")

    database_url: str = "sqlite:///./payouts.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Empty means "same as redis_url": one Redis is enough for locks and the Celery broker.
    broker_url: str = ""
    bitcoind_url: SecretStr = SecretStr("http://payouts:payouts@127.0.0.1:18443/wallet/hot")
    network: Network = "regtest"
    node_timeout_seconds: float = 30.0

    automatic_processing: bool = True
    max_payout_sats: int = Field(default=100_000_000, gt=DUST_LIMIT_SATS)
    auto_max_sats: int = Field(default=10_000_000, ge=0)
    auto_daily_sats: int = Field(default=100_000_000, ge=0)
    min_confirmations: int = Field(default=3, ge=1)
    fee_conf_target: int = Field(default=6, ge=1, le=1008)
    # Used when estimatesmartfee has no estimate (always the case on a fresh regtest chain).
    fallback_fee_rate_sat_vb: int = Field(default=2, ge=1)
    max_fee_rate_sat_vb: int = Field(default=200, ge=1)
    # Fee bumping (docs/architecture.md §6): a transaction still unconfirmed this many blocks
    # after it entered the mempool, paying less than the estimate for FEE_CONF_TARGET, is
    # bumped by the beat job. 0 turns the automatic bumps off (operators can still bump).
    bump_after_blocks: int = Field(default=3, ge=0, le=1000)
    # The most fee one bumped version (or accelerating descendant) may pay, in sats.
    max_bump_fee_sats: int = Field(default=1_000_000, ge=1)
    lease_seconds: int = Field(default=60, ge=5)
    # A human with an external signer needs longer than a worker's lease.
    manual_claim_seconds: int = Field(default=900, ge=30)
    max_attempts: int = Field(default=5, ge=1)
    # An approved automatic payout unclaimed for this long is re-published by the sweeper.
    sweep_after_seconds: int = Field(default=30, ge=1)
    # Batching (docs/architecture.md §6): one transaction pays up to this many payouts (1 keeps
    # one transaction per payout). 100 outputs is ~3.3 kvB: far below the 400,000 WU standard
    # weight, and one lost or stuck transaction never holds up more than 100 payouts.
    batch_max_payouts: int = Field(default=100, ge=1, le=1000)
    # How long a batch run waits for more approvals before it claims (from the oldest
    # waiting approval, so a payout never waits longer than this for company).
    batch_window_seconds: float = Field(default=2.0, ge=0, le=3600)
    # 0: a batch starts on approval. > 0: batches run only on this schedule (BTCPay's
    # "interval"); approvals then publish nothing.
    batch_interval_seconds: float = Field(default=0.0, ge=0, le=86_400)
    # A proven-dead transaction's payouts go back to `approved` once the conflicting spend is
    # this many blocks deep; a shallower reorg could still bring the dead transaction back.
    dead_depth: int = Field(default=6, ge=1, le=1000)
    four_eyes: bool = False
    # How often beat runs the recovery jobs (sweep, rebroadcast, confirmations).
    maintenance_interval_seconds: float = Field(default=10.0, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    max_body_bytes: int = 16_384
    # Empty: /metrics is open. Set: /metrics needs `Authorization: Bearer <token>`.
    metrics_token: SecretStr = SecretStr("")

    flower_user: str = "ops"
    flower_password: SecretStr = SecretStr("")
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("database_url")
    @classmethod
    def _normalise_postgres_driver(cls, value: str) -> str:
        # Operators paste libpq-style URLs; SQLAlchemy needs the driver named (psycopg 3).
        for prefix in ("postgres://", "postgresql://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    """Tests and the CLI change the environment; this makes the next read see it."""
    get_settings.cache_clear()
