"""`make bench`: throughput, latency and memory of the payout pipeline against a no-op Celery
baseline on the same machine, Redis and PostgreSQL. See bench/README.md."""
