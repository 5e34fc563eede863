"""What operators see: job log lines (logs.py, joblog.py), hooks (hooks.py) and
Prometheus metrics (metrics.py). See docs/observability.md."""
