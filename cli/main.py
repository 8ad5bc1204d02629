"""`payouts` — one entry point for every process of the system (docs/architecture.md §12).

Each verb imports its module lazily so `payouts migrate` does not pay for FastAPI or Celery.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payouts",
        description="Exactly-once Bitcoin payout engine. Settings come from PAYOUTS_* "
        "environment variables (see README).",
    )
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    api = sub.add_parser("api", help="serve the HTTP API (FastAPI + uvicorn)")
    api.add_argument("--host", default=None, help="bind address (default PAYOUTS_API_HOST)")
    api.add_argument("--port", type=int, default=None, help="port (default PAYOUTS_API_PORT)")

    worker = sub.add_parser("worker", help="run a Celery worker (queues payouts, maintenance)")
    worker.add_argument("--concurrency", type=int, default=1, help="worker processes (default 1)")
    worker.add_argument(
        "--queues", default="payouts,maintenance", help="comma-separated queues to consume"
    )
    worker.add_argument("--hostname", default=None, help="Celery node name (default generated)")

    sub.add_parser("beat", help="run the Celery beat scheduler for maintenance tasks")
    sub.add_parser("migrate", help="create or upgrade the database schema (Alembic)")

    apikey = sub.add_parser("apikey", help="manage API keys")
    apikey_sub = apikey.add_subparsers(dest="apikey_verb", required=True, metavar="ACTION")
    create = apikey_sub.add_parser("create", help="create a key; prints the secret once")
    create.add_argument("--name", required=True, help="unique key name (shown in audit rows)")
    create.add_argument(
        "--scopes",
        required=True,
        help="comma-separated: payouts:create,payouts:read,payouts:approve,payouts:sign,admin",
    )
    revoke = apikey_sub.add_parser("revoke", help="revoke a key by name")
    revoke.add_argument("--name", required=True)

    demo = sub.add_parser("demo", help="run the whole flow on embedded defaults and print it")
    demo.add_argument("--payouts", type=int, default=5, help="automatic payouts to create")
    demo.add_argument("--workers", type=int, default=2, help="Celery worker processes")

    sub.add_parser("devnode", help="run the simulated bitcoind regtest node", add_help=False)
    sub.add_parser("flower", help="run Flower (Celery monitoring) with basic auth", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # devnode and flower own their flags; hand them the rest of the line untouched.
    if args_list and args_list[0] == "devnode":
        from devnode.cli import main as devnode_main

        return devnode_main(args_list[1:])
    if args_list and args_list[0] == "flower":
        from workers.flower import main as flower_main

        return flower_main(args_list[1:])

    args = _parser().parse_args(args_list)
    if args.verb == "migrate":
        from shared.infra.migrate import upgrade

        upgrade()
        print("database schema is at the latest revision")
        return 0
    if args.verb == "api":
        from api.server import serve

        return serve(host=args.host, port=args.port)
    if args.verb == "apikey":
        from cli.apikeys import cli_create, cli_revoke

        if args.apikey_verb == "create":
            return cli_create(args.name, args.scopes)
        return cli_revoke(args.name)
    if args.verb == "worker":
        from workers.run import run_worker

        return run_worker(concurrency=args.concurrency, queues=args.queues, hostname=args.hostname)
    if args.verb == "beat":
        from workers.run import run_beat

        return run_beat()
    if args.verb == "demo":
        from cli.demo import run_demo

        return run_demo(payouts=args.payouts, workers=args.workers)
    raise AssertionError(f"unhandled verb {args.verb}")


if __name__ == "__main__":
    sys.exit(main())
