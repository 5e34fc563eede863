"""Store URLs and the PostgreSQL settings derived from the detection bound (no server)."""

from __future__ import annotations

import pytest

import mpjobs
from mpjobs.errors import ConfigError
from mpjobs.store.postgres import url as store_url
from mpjobs.store.postgres.connection import advisory_key, keepalive_settings, pg_sql


def test_schema_is_split_off_and_defaults_to_mpjobs() -> None:
    parsed = store_url.parse("postgresql://u@db:5432/app?sslmode=require&schema=billing")
    assert parsed.schema == "billing"
    assert parsed.dsn == "postgresql://u@db:5432/app?sslmode=require"
    assert store_url.parse("postgres://u@db/app").schema == "mpjobs"


@pytest.mark.parametrize("bad", ["Billing", "1abc", "a-b", "x" * 64, "a;drop"])
def test_a_schema_that_is_not_a_plain_identifier_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid schema"):
        store_url.parse(f"postgresql://u@db/app?schema={bad}")


def test_other_schemes_are_refused_naming_the_way_out() -> None:
    with pytest.raises(ConfigError, match="postgresql:// URL, or leave it unset"):
        store_url.parse("sqlite:///x.db")


def test_passwords_never_show() -> None:
    url = "postgresql://jobs:s3cr3t@db.internal:6432/app?schema=x"
    assert store_url.redact(url) == "postgresql://jobs:***@db.internal:6432/app?schema=x"
    assert "s3cr3t" not in repr(store_url.parse(url))
    assert "s3cr3t" not in repr(mpjobs.App("/tmp/never-used", store=url))
    assert store_url.redact("postgresql://db/app") == "postgresql://db/app"


def test_the_environment_supplies_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPJOBS_STORE", "postgresql://u@db/app")
    assert mpjobs.App("/tmp/never-used").store_url == "postgresql://u@db/app"
    monkeypatch.setenv("MPJOBS_STORE", "redis://x")
    with pytest.raises(ConfigError):
        _ = mpjobs.App("/tmp/never-used").store_url
    monkeypatch.delenv("MPJOBS_STORE")
    assert mpjobs.App("/tmp/never-used").store_url is None


@pytest.mark.parametrize("bound", [3.0, 15.0, 60.0])
def test_keepalives_end_a_silent_session_within_two_thirds_of_the_bound(bound: float) -> None:
    ka = keepalive_settings(bound)
    detect = ka["keepalives_idle"] + ka["keepalives_interval"] * ka["keepalives_count"]
    assert ka["tcp_user_timeout"] <= bound * 1000 * 2 / 3
    assert min(detect, ka["tcp_user_timeout"] / 1000) <= bound * 2 / 3 + 1e-9


def test_keys_and_placeholders() -> None:
    assert advisory_key("a", "w1") != advisory_key("b", "w1")  # apps apart
    assert advisory_key("a", "w1") == advisory_key("a", "w1")
    assert -(2**63) <= advisory_key("a", "w1") < 2**63
    assert pg_sql("SELECT ? WHERE x LIKE '%'") == "SELECT %s WHERE x LIKE '%%'"
