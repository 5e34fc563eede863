"""Benchmarks for mpjobs, run side by side with huey: `make bench` (python -m benchmarks.run)."""
