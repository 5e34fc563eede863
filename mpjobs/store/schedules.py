"""Schedule and process rows: declaring, firing, listing; who is running.

Firing is one transaction per pass, so the jobs of a fire and the schedule's new
next_run_time commit together or not at all.
"""

from __future__ import annotations

import logging

from mpjobs.rules.schedules import redeclared
from mpjobs.store.base import (
    ACTIVE,
    RUNNING,
    SCHEDULED,
    FireRule,
    NewJob,
    ProcessRecord,
    ScheduleRecord,
)
from mpjobs.store.counters import CounterQueries
from mpjobs.store.rows import Conn, Rows

log = logging.getLogger("mpjobs.store")

_SCHED_COLS = ", ".join(ScheduleRecord.__dataclass_fields__)
_PROC_COLS = ", ".join(ProcessRecord.__dataclass_fields__)


class ScheduleQueries(CounterQueries):  # counts a fire's job as pushed
    def upsert_schedule(self, rec: ScheduleRecord, trigger_changed: bool = False) -> ScheduleRecord:
        """Declare a schedule; re-declaring the same id updates it as `redeclared` says."""
        with self._tx() as conn:
            self._exclusive(conn, "schedules")
            old = conn.execute(
                f"SELECT {_SCHED_COLS} FROM schedules WHERE id = ?", (rec.id,)
            ).fetchone()
            if old is None:
                conn.execute(
                    f"INSERT INTO schedules ({_SCHED_COLS}) VALUES ({','.join('?' * 12)})",
                    tuple(getattr(rec, f) for f in ScheduleRecord.__dataclass_fields__),
                )
                return rec
            redeclared(ScheduleRecord(*old), rec, trigger_changed)
            conn.execute(
                "UPDATE schedules SET name = ?, func = ?, func_pickle = ?, payload = ?, "
                "trigger = ?, options = ?, next_run_time = ?, updated_at = ? WHERE id = ?",
                (rec.name, rec.func, rec.func_pickle, rec.payload, rec.trigger, rec.options,
                 rec.next_run_time, rec.updated_at, rec.id),
            )  # fmt: skip
            return rec

    def get_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        r = (
            self._conn()
            .execute(f"SELECT {_SCHED_COLS} FROM schedules WHERE id = ?", (schedule_id,))
            .fetchone()
        )
        return ScheduleRecord(*r) if r else None

    def list_schedules(self) -> list[ScheduleRecord]:
        sql = f"SELECT {_SCHED_COLS} FROM schedules ORDER BY id"
        return [ScheduleRecord(*r) for r in self._conn().execute(sql)]

    def update_schedule(self, schedule_id: str, **fields: object) -> bool:
        allowed = {"state", "next_run_time", "trigger", "failures", "updated_at", "options"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"cannot update schedule fields {sorted(set(fields) - allowed)}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self._tx() as conn:
            cur = conn.execute(
                f"UPDATE schedules SET {sets} WHERE id = ?", [*fields.values(), schedule_id]
            )
            return cur.rowcount == 1

    def remove_schedule(self, schedule_id: str) -> bool:
        with self._tx() as conn:
            return conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount == 1

    def fire_due(self, now: float, rule: FireRule) -> list[int]:
        """Turn every due fire into jobs and advance the schedule, in one transaction.

        Because the jobs and the new next_run_time commit together, a leader killed at
        any instant leaves either both or neither: each fire yields exactly one job.
        """
        ids: list[int] = []
        fired: list[NewJob] = []
        with self._tx() as conn:
            self._fence(conn)
            due = [
                ScheduleRecord(*r)
                for r in conn.execute(
                    f"SELECT {_SCHED_COLS} FROM schedules "
                    f"WHERE state = '{ACTIVE}' AND next_run_time <= ?",
                    (now,),
                )
            ]
            for rec in due:
                try:
                    jobs, next_time = rule(rec, now, self._active_count(conn, rec.id))
                except Exception:
                    # One broken schedule (say, a corrupt trigger) must not stop the
                    # others from firing: log it and look at it again in a minute.
                    log.exception("schedule %r cannot be fired; retrying in 60 s", rec.id)
                    jobs, next_time = [], now + 60.0
                for j in jobs:
                    job_id = self._insert_fired(conn, j, now)
                    if job_id is not None:
                        ids.append(job_id)
                        fired.append(j)
                # Only while still active: on PostgreSQL a completion may have stopped
                # the schedule (max_failures) since the SELECT above, and its NULL stays.
                conn.execute(
                    f"UPDATE schedules SET next_run_time = ? WHERE id = ? AND state = '{ACTIVE}'",
                    (next_time, rec.id),
                )
            self._count_pushed(conn, fired)
        return ids

    def next_fire_time(self) -> float | None:
        r = (
            self._conn()
            .execute(f"SELECT min(next_run_time) FROM schedules WHERE state = '{ACTIVE}'")
            .fetchone()
        )
        return None if r is None or r[0] is None else float(r[0])

    @staticmethod
    def _active_count(conn: Conn, schedule_id: str) -> int:
        r = conn.execute(
            "SELECT count(*) FROM jobs WHERE schedule_id = ? "
            f"AND status IN ('{SCHEDULED}', '{RUNNING}')",
            (schedule_id,),
        ).fetchone()
        return int(r[0])

    def active_count(self, schedule_id: str) -> int:
        return self._active_count(self._conn(), schedule_id)


class ProcessQueries(Rows):
    def register_process(self, rec: ProcessRecord) -> None:
        with self._tx() as conn:
            conn.execute(
                f"INSERT INTO processes ({_PROC_COLS}) VALUES (?,?,?,?,?,?) ON CONFLICT (token) "
                "DO UPDATE SET kind = excluded.kind, pid = excluded.pid, parent = excluded.parent, "
                "started_at = excluded.started_at, info = excluded.info",
                (rec.token, rec.kind, rec.pid, rec.parent, rec.started_at, rec.info),
            )

    def unregister_process(self, token: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM processes WHERE token = ?", (token,))

    def list_processes(self) -> list[ProcessRecord]:
        sql = f"SELECT {_PROC_COLS} FROM processes ORDER BY started_at"
        return [ProcessRecord(*r) for r in self._conn().execute(sql)]
