"""A running job's progress and metadata: the two columns only its owner writes.

Kept out of JobRecord and the claim's column list on purpose: progress is written
while a job runs and read by whoever asks (`Job.progress`), never on the push, claim or
completion path, so those stay exactly as fast as before. The SQL is shared by SQLite
and PostgreSQL (`?` placeholders, translated by the PostgreSQL connector).
"""

from __future__ import annotations

import json
from typing import Any

from mpjobs.store.base import RUNNING
from mpjobs.store.rows import Rows

Progress = tuple[float | None, dict[str, Any] | None]


def decode(progress: Any, meta: Any) -> Progress:
    """A row's (progress, meta) as Python values: meta is stored as JSON text."""
    return (
        None if progress is None else float(progress),
        None if meta is None else dict(json.loads(meta)),
    )


class ProgressQueries(Rows):
    def set_progress(self, job_id: int, owner: str, value: float | None, meta: str | None) -> bool:
        """Record a running job's progress (and its meta JSON, unless None: kept as it
        was); only its owner may, and only while it runs. False if it no longer does."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE jobs SET progress = ?, meta = coalesce(?, meta) "
                f"WHERE id = ? AND owner = ? AND status = '{RUNNING}'",
                (value, meta, job_id, owner),
            )
            return bool(cur.rowcount == 1)

    def progress_of(self, job_id: int) -> Progress | None:
        """(progress, meta) of a job, None if no such job; read fresh, no transaction."""
        row = (
            self._conn()
            .execute("SELECT progress, meta FROM jobs WHERE id = ?", (job_id,))
            .fetchone()
        )
        return None if row is None else decode(row[0], row[1])
