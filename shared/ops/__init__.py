"""What operators watch: Prometheus metrics and the health and readiness checks."""
