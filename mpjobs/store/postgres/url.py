"""Store URLs: which database, which schema, and how to name it without its password."""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

from mpjobs.errors import ConfigError

DEFAULT_SCHEMA = "mpjobs"
STORE_ENV = "MPJOBS_STORE"
_SCHEMES = ("postgresql", "postgres")
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class StoreUrl:
    """A parsed `postgresql://` URL: `dsn` is what libpq gets (no `schema` parameter)."""

    url: str
    dsn: str
    schema: str

    @property
    def redacted(self) -> str:
        """The URL with any password replaced, for logs, errors and `mpjobs status`."""
        return redact(self.url)

    def __repr__(self) -> str:
        return f"StoreUrl({self.redacted!r})"


def redact(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = urllib.parse.quote(parts.username or "", safe="")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def store_from(store: str | None) -> str | None:
    """The store a process uses: the argument, else `$MPJOBS_STORE`, else None (SQLite)."""
    if store is None:
        store = os.environ.get(STORE_ENV) or None
    if store is None:
        return None
    if not isinstance(store, str):
        raise ConfigError(f"store must be a postgresql:// URL or None, not {type(store).__name__}")
    parse(store)  # a bad URL fails here, early, with a clear message
    return store


def parse(url: str) -> StoreUrl:
    """Check `url` and split off the `schema` query parameter (default "mpjobs").

    The schema names the app in a shared database: several apps can keep their jobs in
    one database, each in its own schema. It must be a plain lower-case identifier, so
    it can be spelled into DDL and `search_path` without quoting surprises.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ConfigError(
            f"unsupported store {redact(url)!r}: use a postgresql:// URL, or leave it unset "
            "for SQLite in the home"
        )
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    schemas = [v for k, v in query if k == "schema"]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    if not _IDENT.fullmatch(schema):
        raise ConfigError(
            f"invalid schema {schema!r} in store URL: use lower-case letters, digits and _ "
            "(at most 63, not starting with a digit)"
        )
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
    return StoreUrl(url, dsn, schema)
