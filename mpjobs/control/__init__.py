"""Job control: options that decide whether, and when, a due job may start.

Each module holds one option's parsing and its rule (expiry.py, rate.py,
concurrency.py); gate.py combines them into the decision a claim makes per job, so the
SQL stores and the in-memory store decide alike.
"""
