"""The bitcoind helper scripts of docker-compose.yml, run for real against stand-ins for
bitcoin-cli (no Bitcoin Core binary on the build machines)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "docker" / "bitcoind"

FAKE_NODE = r"""#!/bin/sh
# Answers the wallet RPCs init-wallet.sh uses from files in $STATE; logs every call.
echo "$*" >> "$STATE/calls"
case "$*" in
  *listwallets*) if [ -f "$STATE/loaded" ]; then echo '[
  "hot"
]'; else echo '[
]'; fi ;;
  *listwalletdir*) if [ -f "$STATE/on-disk" ]; then echo '{
  "wallets": [
    {
      "name": "hot"
    }
  ]
}'; else echo '{
  "wallets": [
  ]
}'; fi ;;
  *createwallet*) touch "$STATE/on-disk" "$STATE/loaded" ;;
  *loadwallet*) touch "$STATE/loaded" ;;
  *) exit 1 ;;
esac
"""


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_scripts_are_valid_posix_shell(script: str) -> None:
    assert subprocess.run(["sh", "-n", str(SCRIPTS / script)]).returncode == 0


class TestInitWallet:
    @pytest.fixture
    def node(self, tmp_path: Path) -> Path:
        fake = tmp_path / "fake-cli"
        fake.write_text(FAKE_NODE)
        fake.chmod(0o755)
        return tmp_path

    def run(self, node: Path) -> str:
        env = {**os.environ, "STATE": str(node), "BITCOIN_CLI": str(node / "fake-cli")}
        done = subprocess.run(["sh", str(SCRIPTS / "init-wallet.sh")], env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
        return done.stdout.strip()

    def wallet_calls(self, node: Path) -> list[str]:
        calls = (node / "calls").read_text().splitlines()
        return [c for c in calls if "createwallet" in c or "loadwallet " in c]

    def test_first_start_creates_the_wallet_loaded_on_every_start(self, node: Path) -> None:
        assert self.run(node) == "wallet hot created"
        [call] = self.wallet_calls(node)
        assert "wallet_name=hot" in call and "load_on_startup=true" in call

    def test_a_loaded_wallet_is_left_alone(self, node: Path) -> None:
        self.run(node)

        assert self.run(node) == "wallet hot already loaded"
        assert len(self.wallet_calls(node)) == 1

    def test_a_wallet_on_disk_but_not_loaded_is_loaded_not_recreated(self, node: Path) -> None:
        (node / "on-disk").touch()

        assert self.run(node) == "wallet hot loaded"
        [call] = self.wallet_calls(node)
        assert "loadwallet filename=hot" in call and "load_on_startup=true" in call


def test_cli_passes_the_password_on_stdin_never_as_an_argument(tmp_path: Path) -> None:
    # A stand-in bitcoin-cli on PATH that reports its arguments and its stdin.
    fake = tmp_path / "bitcoin-cli"
    fake.write_text('#!/bin/sh\necho "ARGS $*"\necho "STDIN $(cat)"\n')
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}",
           "BITCOIN_RPC_USER": "payouts", "BITCOIN_RPC_PASSWORD": "pw-Zr8"}  # fmt: skip

    out = subprocess.run(["sh", str(SCRIPTS / "cli.sh"), "getblockchaininfo"], env=env,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip

    args, stdin = out.splitlines()
    assert "-stdinrpcpass" in args and "-regtest" in args and "pw-Zr8" not in args
    assert args.endswith("getblockchaininfo") and stdin == "STDIN pw-Zr8"


def test_start_writes_the_credentials_to_a_private_config_file(tmp_path: Path) -> None:
    # /entrypoint.sh is the image's; here the script stops where it would hand over.
    script = (SCRIPTS / "start.sh").read_text().replace("exec /entrypoint.sh", "exit 0 #")
    env = {**os.environ, "BITCOIN_DATA": str(tmp_path / "data"),
           "BITCOIN_RPC_USER": "payouts", "BITCOIN_RPC_PASSWORD": "pw-Zr8"}  # fmt: skip

    subprocess.run(["sh", "-c", script, "start.sh", "-regtest"], env=env, check=True)

    conf = tmp_path / "data" / "bitcoin.conf"
    assert conf.read_text() == "rpcuser=payouts\nrpcpassword=pw-Zr8\n"
    assert conf.stat().st_mode & 0o077 == 0
