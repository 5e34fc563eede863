"""Turn a store of this version back into a version-1 store, to test the migration.

What versions 2 and later added is read from the migrations themselves (every CREATE
TABLE, CREATE INDEX and ADD COLUMN of MIGRATIONS[2] on), undone newest first, so a test
of one feature's upgrade keeps working when another feature adds to the schema.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path


def _undo(statements: list[str], before: list[str]) -> list[str]:
    """DROP statements for what `statements` create, indexes first, columns last; then
    the indexes of `before` (the version-1 DDL) that `statements` dropped, made again."""
    indexes, tables, columns, remade = [], [], [], []
    for sql in statements:
        text = " ".join(sql.split())
        if m := re.match(r"DROP INDEX (\w+)", text, re.I):
            old = [b for b in before if re.search(rf"CREATE (?:UNIQUE )?INDEX {m.group(1)} ", b)]
            remade.append(old[0].replace(f"INDEX {m.group(1)} ON ", f"INDEX {m.group(1)} ON {{s}}"))
        elif m := re.match(r"CREATE (?:UNIQUE )?INDEX (?:IF NOT EXISTS )?(\w+)", text, re.I):
            indexes.append(f"DROP INDEX {{s}}{m.group(1)}")
        elif m := re.match(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", text, re.I):
            tables.append(f"DROP TABLE {{s}}{m.group(1)}")
        elif m := re.match(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", text, re.I):
            columns.append(f"ALTER TABLE {{s}}{m.group(1)} DROP COLUMN {m.group(2)}")
    return indexes + tables + columns + remade


def _back_to_v1(migrations: dict[int, list[str]]) -> list[str]:
    """The DROP statements of every version above 1, the newest version first."""
    return [
        sql for v in sorted(migrations, reverse=True) if v > 1
        for sql in _undo(migrations[v], migrations[v - 1])
    ]  # fmt: skip


def downgrade_sqlite(db: Path) -> None:
    from mpjobs.store.schema import MIGRATIONS

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for sql in _back_to_v1(MIGRATIONS):
            conn.execute(sql.format(s=""))
        conn.execute("PRAGMA user_version = 1")
    finally:
        conn.close()


def downgrade_postgres(url: str) -> None:
    import psycopg

    from mpjobs.store.postgres.schema import MIGRATIONS

    schema = url.rsplit("schema=", 1)[1].split("&")[0] if "schema=" in url else "mpjobs"
    base = url.split("?schema=")[0].split("&schema=")[0]
    with psycopg.connect(base, autocommit=True) as conn:
        for sql in _back_to_v1(MIGRATIONS):
            conn.execute(sql.format(s=f"{schema}."))
        conn.execute(f"UPDATE {schema}.meta SET value = '1' WHERE key = 'version'")
