"""The store's schema and its migrations, the only place DDL lives.

`PRAGMA application_id` marks a file as ours, so a foreign SQLite file is refused instead
of being written into; `PRAGMA user_version` is the schema version migrations walk up.
"""

from __future__ import annotations

from mpjobs.store.base import CANCELLED, RUNNING, SCHEDULED, TERMINAL

APPLICATION_ID = 0x6D706A62  # "mpjb"
SCHEMA_VERSION = 2

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            func TEXT,
            func_pickle BLOB,
            payload BLOB,
            queue TEXT NOT NULL,
            priority INTEGER NOT NULL,
            status TEXT NOT NULL,
            exec_at REAL NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            retry_backoff REAL NOT NULL,
            timeout REAL,
            memory_limit INTEGER,
            unique_key TEXT,
            schedule_id TEXT,
            owner TEXT,
            pid INTEGER,
            result BLOB,
            exc BLOB,
            error TEXT,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL
        )
        """,
        # The claim path: a partial index holds only waiting jobs, so its size is the
        # backlog, not the history, and a claim reads its first entries in order
        # (priority, exec_at, then the rowid every index carries: push order).
        # The statuses come from base.py, the one source; the texts are as they were
        # when this migration was first shipped, byte for byte.
        f"""CREATE INDEX jobs_ready ON jobs(priority, exec_at)
           WHERE status = '{SCHEDULED}'""",
        f"""CREATE UNIQUE INDEX jobs_unique ON jobs(unique_key)
           WHERE unique_key IS NOT NULL AND status IN ('{SCHEDULED}', '{RUNNING}')""",
        f"CREATE INDEX jobs_running ON jobs(owner) WHERE status = '{RUNNING}'",
        f"""CREATE INDEX jobs_kill ON jobs(owner)
           WHERE status = '{CANCELLED}' AND owner IS NOT NULL""",
        """CREATE INDEX jobs_schedule ON jobs(schedule_id, id)
           WHERE schedule_id IS NOT NULL""",
        """
        CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            func TEXT,
            func_pickle BLOB,
            payload BLOB NOT NULL,
            trigger TEXT NOT NULL,
            options TEXT NOT NULL,
            state TEXT NOT NULL,
            next_run_time REAL,
            failures INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE processes (
            token TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            pid INTEGER NOT NULL,
            parent TEXT,
            started_at REAL NOT NULL,
            info TEXT NOT NULL
        ) WITHOUT ROWID
        """,
    ],
    2: [
        # The dashboard's pages and `mpjobs jobs list` (store/listing.py). A status filter
        # walks one of these newest first and stops after a page. One partial index per
        # finished status, not one on (status, id): the planner would take that one for
        # the claim's `status = 'SCHEDULED'` instead of jobs_ready (and sort the backlog
        # at every claim), and each job is in one of these only once it has finished.
        *[
            f"CREATE INDEX jobs_{s.lower()} ON jobs(id) WHERE status = '{s}'"
            for s in sorted(TERMINAL)
        ],
        # The overview's last hour: finished jobs only, so a push writes no entry.
        "CREATE INDEX jobs_finished ON jobs(finished_at) WHERE finished_at IS NOT NULL",
    ],
}
