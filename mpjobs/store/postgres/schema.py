"""The PostgreSQL schema and its migrations, the only place its DDL lives.

Every app's tables live in a schema of their own (`?schema=` of the store URL, default
`mpjobs`), so several apps can share a database. A table `meta` marks a schema as
mpjobs' and holds its version; a schema that has tables but no such mark belongs to
someone else and is refused, untouched. Migrations run under a session advisory lock,
so the first processes of many hosts starting at once migrate exactly once.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from mpjobs.errors import StoreError
from mpjobs.store.base import CANCELLED, RUNNING, SCHEDULED, TERMINAL
from mpjobs.store.postgres.connection import advisory_key, connect
from mpjobs.store.postgres.url import StoreUrl

log = logging.getLogger("mpjobs.store")

SCHEMA_VERSION = 3
MARK = "mpjobs store"
MIGRATE_WAIT_MS = 60_000  # a migration elsewhere takes well under a second

MIGRATIONS: dict[int, list[str]] = {
    1: [
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        """
        CREATE TABLE jobs (
            id bigserial PRIMARY KEY,
            name text NOT NULL,
            func text,
            func_pickle bytea,
            payload bytea,
            queue text NOT NULL,
            priority integer NOT NULL,
            status text NOT NULL,
            exec_at double precision NOT NULL,
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL,
            retry_backoff double precision NOT NULL,
            timeout double precision,
            memory_limit bigint,
            unique_key text,
            schedule_id text,
            owner text,
            pid integer,
            result bytea,
            exc bytea,
            error text,
            created_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            fired_for double precision
        )
        """,
        # Claims read the first entries of a partial index of waiting jobs only, so a
        # claim costs O(log n) however many finished rows the table holds.
        f"CREATE INDEX jobs_ready ON jobs (priority, exec_at, id) WHERE status = '{SCHEDULED}'",
        f"""CREATE INDEX jobs_ready_queue ON jobs (queue, priority, exec_at, id)
            WHERE status = '{SCHEDULED}'""",
        f"""CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key)
            WHERE unique_key IS NOT NULL AND status IN ('{SCHEDULED}', '{RUNNING}')""",
        f"CREATE INDEX jobs_running ON jobs (owner) WHERE status = '{RUNNING}'",
        f"""CREATE INDEX jobs_kill ON jobs (owner)
            WHERE status = '{CANCELLED}' AND owner IS NOT NULL""",
        "CREATE INDEX jobs_schedule ON jobs (schedule_id, id) WHERE schedule_id IS NOT NULL",
        # One job per fire of a schedule, even from two leaders that overlap.
        """CREATE UNIQUE INDEX jobs_fired ON jobs (schedule_id, fired_for)
            WHERE fired_for IS NOT NULL""",
        """
        CREATE TABLE schedules (
            id text PRIMARY KEY,
            name text NOT NULL,
            func text,
            func_pickle bytea,
            payload bytea NOT NULL,
            trigger text NOT NULL,
            options text NOT NULL,
            state text NOT NULL,
            next_run_time double precision,
            failures integer NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            updated_at double precision NOT NULL
        )
        """,
        """
        CREATE TABLE processes (
            token text PRIMARY KEY,
            kind text NOT NULL,
            pid integer NOT NULL,
            parent text,
            started_at double precision NOT NULL,
            info text NOT NULL
        )
        """,
        # Who leads, and the epoch each new leader bumps: the fencing token of leader writes.
        """
        CREATE TABLE leader (
            id integer PRIMARY KEY CHECK (id = 1),
            epoch bigint NOT NULL,
            token text,
            pid integer,
            host text,
            since double precision
        )
        """,
        "INSERT INTO leader (id, epoch) VALUES (1, 0)",
    ],
    2: [
        # Workflows (store/deps.py): an edge per dependency, resolved once (done).
        """
        CREATE TABLE job_deps (
            parent bigint NOT NULL,
            child bigint NOT NULL,
            done integer NOT NULL DEFAULT 0,
            PRIMARY KEY (parent, child)
        )
        """,
        "CREATE INDEX job_deps_child ON job_deps (child)",
        """
        CREATE TABLE job_waits (
            job_id bigint PRIMARY KEY,
            remaining integer NOT NULL,
            exec_at double precision NOT NULL
        )
        """,
        """
        CREATE TABLE job_groups (
            group_id text NOT NULL,
            job_id bigint NOT NULL,
            PRIMARY KEY (group_id, job_id)
        )
        """,
        """
        CREATE TABLE counters (
            token text NOT NULL,
            name text NOT NULL,
            task text NOT NULL,
            queue text NOT NULL,
            status text NOT NULL,
            bucket integer NOT NULL,
            n bigint NOT NULL,
            total double precision NOT NULL,
            PRIMARY KEY (token, name, task, queue, status, bucket)
        )
        """,
        # Job control (mpjobs/control/, store/gated.py): plain jobs leave these NULL.
        "ALTER TABLE jobs ADD COLUMN expires_at double precision",
        "ALTER TABLE jobs ADD COLUMN concurrency_key text",
        "ALTER TABLE jobs ADD COLUMN concurrency_limit integer",
        "ALTER TABLE jobs ADD COLUMN rate_limit integer",
        "ALTER TABLE jobs ADD COLUMN rate_period double precision",
        "ALTER TABLE jobs ADD COLUMN gated integer",
        f"""CREATE INDEX jobs_gated ON jobs (priority, exec_at, id)
            WHERE gated = 1 AND status = '{SCHEDULED}'""",
        """
        CREATE TABLE rate_windows (
            name text PRIMARY KEY,
            window_start double precision NOT NULL,
            used integer NOT NULL
        )
        """,
        # issue 13, progress (mpjobs.current_job().set_progress): written only by the
        # job's owner while it runs, read by Job.progress / Job.meta (JSON text).
        "ALTER TABLE jobs ADD COLUMN progress double precision",
        "ALTER TABLE jobs ADD COLUMN meta text",
        # The dashboard's pages and `mpjobs jobs list` (store/listing.py): see the SQLite
        # schema for why one partial index per finished status rather than (status, id).
        *[
            f"CREATE INDEX jobs_{s.lower()} ON jobs (id) WHERE status = '{s}'"
            for s in sorted(TERMINAL)
        ],
        # The overview's last hour: finished jobs only, so a push writes no entry.
        "CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL",
    ],
    3: [
        # The leader's census of the queues too deep to count live (store/census.py).
        """
        CREATE TABLE depths (
            queue text PRIMARY KEY,
            waiting bigint NOT NULL,
            counted_at double precision NOT NULL
        )
        """,
    ],
}


def migrate(target: StoreUrl) -> None:
    """Vet the app's schema and bring it up to date, once, whoever starts first."""
    key = advisory_key(target.schema, "migrate")
    conn = connect(target, "migrate", search_path=False)
    try:
        if _current(conn, target):
            return  # the common case, for every process after the first: one query
        conn.execute(f"SET lock_timeout = {MIGRATE_WAIT_MS}")
        conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        version = _version(conn, target)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"schema {target.schema!r} of {target.redacted} has version {version}, newer "
                f"than this mpjobs understands ({SCHEMA_VERSION}); upgrade mpjobs"
            )
        if version < SCHEMA_VERSION:
            with conn.transaction():
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {target.schema}")
                conn.execute(f"SET LOCAL search_path = {target.schema}")
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[step]:
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('mark', %s), ('version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (MARK, str(SCHEMA_VERSION)),
                )
            log.info("store %s: schema %s at version %d", target.redacted, target.schema,
                     SCHEMA_VERSION)  # fmt: skip
    except psycopg.Error as exc:
        raise StoreError(f"cannot prepare the store {target.redacted}: {exc}") from exc
    finally:
        conn.close()  # ends the session, and with it the advisory lock


def _current(conn: psycopg.Connection[Any], target: StoreUrl) -> bool:
    """Whether the schema is ours and at this version already, asked without a lock."""
    try:
        row = conn.execute(
            f"SELECT (SELECT value FROM {target.schema}.meta WHERE key = 'mark'), "
            f"(SELECT value FROM {target.schema}.meta WHERE key = 'version')"
        ).fetchone()
    except psycopg.errors.UndefinedTable:
        return False  # no schema or no meta table: the locked path decides
    return row is not None and row[0] == MARK and row[1] == str(SCHEMA_VERSION)


def _version(conn: psycopg.Connection[Any], target: StoreUrl) -> int:
    """The schema's version: 0 if it does not exist or is empty; refuse a foreign one."""
    tables = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
        (target.schema,),
    ).fetchall()
    names = {r[0] for r in tables}
    if not names:
        return 0
    if "meta" not in names:
        raise StoreError(
            f"schema {target.schema!r} of {target.redacted} holds tables of another program "
            f"({', '.join(sorted(names)[:5])}); it was left untouched. Choose another schema "
            "with ?schema=NAME in the store URL."
        )
    rows = dict(
        conn.execute(f"SELECT key, value FROM {target.schema}.meta").fetchall()
    )
    if rows.get("mark") != MARK:
        raise StoreError(
            f"schema {target.schema!r} of {target.redacted} is not an mpjobs store (its meta "
            "table has no mpjobs mark); it was left untouched"
        )
    try:
        return int(rows.get("version", "0"))
    except ValueError:
        raise StoreError(
            f"schema {target.schema!r}: unreadable version {rows['version']!r}"
        ) from None
