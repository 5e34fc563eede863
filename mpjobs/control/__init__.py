"""Job control: what a job may ask of, or be told by, the worker running it.

Retry rules, soft time limits, progress and the running job's context (issue 13), and
the home-wide limits on starts (rate, concurrency key, expiry). Each lives in its own
module, so a worker imports only what the jobs it runs use.
"""
