"""Job control: what a job may ask of, or be told by, the worker running it, and the
home-wide rules on when a due job may start.

- Retry rules, soft time limits and the job's carried options (spec.py), the running
  job's context and progress (context.py, progress.py): decided in the worker.
- Expiry, rate limits and concurrency keys (expiry.py, rate.py, concurrency.py, with
  options.py for their checks): gate.py combines them into the decision a claim makes
  per job, so the SQL stores and the in-memory store decide alike.
"""
