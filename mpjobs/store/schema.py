"""The store's schema and its migrations, the only place DDL lives.

`PRAGMA application_id` marks a file as ours, so a foreign SQLite file is refused instead
of being written into; `PRAGMA user_version` is the schema version migrations walk up.
"""

from __future__ import annotations

from mpjobs.store.base import CANCELLED, RUNNING, SCHEDULED, TERMINAL

APPLICATION_ID = 0x6D706A62  # "mpjb"
SCHEMA_VERSION = 3

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
        # The due reads at scale (store/due.py): ordered by queue first, so a worker's
        # queues and each of their priorities are seeks, and the due jobs of a (queue,
        # priority) come before its delayed ones. Ordered by priority first, a due check
        # or a claim short of due jobs read every delayed job of the priorities above.
        "DROP INDEX jobs_ready",
        f"""CREATE INDEX jobs_ready ON jobs(queue, priority, exec_at)
           WHERE status = '{SCHEDULED}'""",
        # A schedule's live jobs (its max_instances count at every fire): a seek among
        # the few live ones, where jobs_schedule walks the schedule's whole history.
        f"""CREATE INDEX jobs_schedule_live ON jobs(schedule_id)
           WHERE schedule_id IS NOT NULL AND status IN ('{SCHEDULED}', '{RUNNING}')""",
        # Workflows (store/deps.py): an edge per dependency, resolved once (done).
        """
        CREATE TABLE job_deps (
            parent INTEGER NOT NULL,
            child INTEGER NOT NULL,
            done INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (parent, child)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX job_deps_child ON job_deps(child)",
        # A waiting job's count of parents not yet succeeded, and when it asked to run.
        """
        CREATE TABLE job_waits (
            job_id INTEGER PRIMARY KEY,
            remaining INTEGER NOT NULL,
            exec_at REAL NOT NULL
        )
        """,
        """
        CREATE TABLE job_groups (
            group_id TEXT NOT NULL,
            job_id INTEGER NOT NULL,
            PRIMARY KEY (group_id, job_id)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE counters (
            token TEXT NOT NULL,
            name TEXT NOT NULL,
            task TEXT NOT NULL,
            queue TEXT NOT NULL,
            status TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            n INTEGER NOT NULL,
            total REAL NOT NULL,
            PRIMARY KEY (token, name, task, queue, status, bucket)
        ) WITHOUT ROWID
        """,
        # Job control (mpjobs/control/, store/gated.py). A job with a control option has
        # gated = 1; plain jobs leave every one of these NULL. One partial index serves
        # the claim's probe, the gated claim and the expiry sweep: each partial index
        # costs every insert a test of its WHERE (three cost a no-op push 15%), and
        # `gated = 1` first fails at once for a plain job. A key's RUNNING count walks
        # jobs_running, which holds only the running jobs.
        "ALTER TABLE jobs ADD COLUMN expires_at REAL",
        "ALTER TABLE jobs ADD COLUMN concurrency_key TEXT",
        "ALTER TABLE jobs ADD COLUMN concurrency_limit INTEGER",
        "ALTER TABLE jobs ADD COLUMN rate_limit INTEGER",
        "ALTER TABLE jobs ADD COLUMN rate_period REAL",
        "ALTER TABLE jobs ADD COLUMN gated INTEGER",
        f"""CREATE INDEX jobs_gated ON jobs(queue, priority, exec_at)
           WHERE gated = 1 AND status = '{SCHEDULED}'""",
        # One row per rate-limited task: the current fixed window and the starts in it.
        """
        CREATE TABLE rate_windows (
            name TEXT PRIMARY KEY,
            window_start REAL NOT NULL,
            used INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        # issue 13, progress (mpjobs.current_job().set_progress): written only by the
        # job's owner while it runs, read by Job.progress / Job.meta (JSON text).
        "ALTER TABLE jobs ADD COLUMN progress REAL",
        "ALTER TABLE jobs ADD COLUMN meta TEXT",
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
    3: [
        # The leader's census of the queues too deep to count live (store/census.py):
        # one row per such queue, rewritten by each census.
        """
        CREATE TABLE depths (
            queue TEXT PRIMARY KEY,
            waiting INTEGER NOT NULL,
            counted_at REAL NOT NULL
        ) WITHOUT ROWID
        """,
    ],
}
