"""The throwaway PostgreSQL harness and the network-namespace cut the partition tests rely on.

The last test here is the fact mpjobs' partition recovery is built on: when a host is cut off
from the server, the server itself ends that host's sessions (its per-session TCP keepalive /
user-timeout settings fire), so session-level advisory locks the host held become free for
others within seconds, without anyone on the cut host doing anything.

Skips when PostgreSQL or network namespaces are unavailable, but fails under CI (CI set).
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests import netns as netns_mod
from tests import pgharness
from tests.netns import NetNs
from tests.pgharness import PgCluster, cluster_for_session, require_pg

# The client-side settings that turn a silent cut into an error on the client within seconds.
CLIENT_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 3000,
}
# The same for the server's end of one session (per-session settings, passed at connect).
SERVER_KEEPALIVES = (
    "-c tcp_keepalives_idle=1 -c tcp_keepalives_interval=1 -c tcp_keepalives_count=2 "
    "-c tcp_user_timeout=3000"
)
# Upper bound we promise for either side to notice a cut (measured: about 3 s).
DETECT_WITHIN = 10.0


def require_netns() -> None:
    reason = netns_mod.available()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but network namespaces are unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    require_pg()
    c = PgCluster(tmp_path_factory.mktemp("pgharness") / "pg")
    started = time.monotonic()
    c.start()
    print(f"\n[pgharness] start (initdb + start): {time.monotonic() - started:.2f}s")
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def ns() -> Iterator[NetNs]:
    require_netns()
    with NetNs("pgh") as n:
        yield n


# A psycopg client run inside the namespace: connects, says so, then runs one statement per
# line of stdin and answers each with one JSON line (row or error class, and seconds taken).
CLIENT = r"""
import json, sys, time
import psycopg
url, opts = sys.argv[1], json.loads(sys.argv[2])
try:
    conn = psycopg.connect(url, autocommit=True, connect_timeout=10, **opts)
except psycopg.Error as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}), flush=True)
    sys.exit(1)
print(json.dumps({"connected": True}), flush=True)
for line in sys.stdin:
    started = time.monotonic()
    try:
        row = conn.execute(line.strip()).fetchone()
        out = {"row": list(row) if row is not None else None}
    except psycopg.Error as e:
        out = {"error": type(e).__name__, "message": str(e)}
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out, default=str), flush=True)
"""


class Client:
    """The CLIENT process, with bounded request/answer over its pipes."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._sel = selectors.DefaultSelector()
        assert proc.stdout is not None
        self._sel.register(proc.stdout, selectors.EVENT_READ)

    def answer(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        if not self._sel.select(timeout):
            raise AssertionError(f"client gave no answer within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"client exited (rc={self.proc.wait(5)}) without an answer")
        result: dict[str, Any] = json.loads(line)
        return result

    def send(self, statement: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(statement + "\n")
        self.proc.stdin.flush()

    def ask(self, statement: str, timeout: float = 10.0) -> dict[str, Any]:
        self.send(statement)
        return self.answer(timeout)


@contextmanager
def client_in(ns: NetNs, url: str, **opts: Any) -> Iterator[Client]:
    proc = subprocess.Popen(
        [*ns.prefix, sys.executable, "-c", CLIENT, url, json.dumps(opts)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        client = Client(proc)
        first = client.answer(20.0)
        assert first == {"connected": True}, first
        yield client
    finally:
        proc.kill()
        proc.wait(10)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def test_tcp_and_unix_socket(cluster: PgCluster) -> None:
    import psycopg

    assert cluster.url() == f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
    with psycopg.connect(cluster.url(), connect_timeout=10) as conn:
        row = conn.execute("SHOW synchronous_commit").fetchone()
        assert row == ("on",)
        row = conn.execute("SELECT inet_server_port(), current_setting('fsync')").fetchone()
        assert row == (cluster.port, "off")
    socket_url = cluster.url(host=str(cluster.socket_dir))
    with psycopg.connect(socket_url, connect_timeout=10) as conn:
        # over a unix socket the server has no client address
        assert conn.execute("SELECT inet_client_addr()").fetchone() == (None,)
    assert (cluster.socket_dir / f".s.PGSQL.{cluster.port}").exists()
    assert cluster.log_path.exists()
    assert (cluster.datadir / "PG_VERSION").exists()


def test_create_database(cluster: PgCluster) -> None:
    import psycopg

    url = cluster.create_database("harness_db")
    assert url == cluster.url(dbname="harness_db")
    with psycopg.connect(url, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("harness_db",)


def test_restart_keeps_data_and_ends_sessions(cluster: PgCluster) -> None:
    import psycopg

    old = psycopg.connect(cluster.url(), autocommit=True, connect_timeout=10)
    try:
        old.execute("CREATE TABLE kept (x int)")
        old.execute("INSERT INTO kept VALUES (7)")
        pid = cluster.pid
        started = time.monotonic()
        cluster.restart()
        print(f"\n[pgharness] restart -m fast: {time.monotonic() - started:.2f}s")
        assert cluster.pid != pid
        with pytest.raises(psycopg.OperationalError):
            old.execute("SELECT 1")
    finally:
        old.close()
    with psycopg.connect(cluster.url(), connect_timeout=10) as new:
        assert new.execute("SELECT x FROM kept").fetchall() == [(7,)]


def test_stop_is_idempotent_and_start_keeps_port(tmp_path: Path) -> None:
    require_pg()
    c = PgCluster(tmp_path / "pg")
    c.stop()  # never started: nothing to do
    c.start()
    port = c.port
    c.stop()
    c.stop()
    assert not c.running
    c.start()  # the same data dir and, if it is still free, the same port
    try:
        assert c.running
        assert c.port == port
    finally:
        c.stop()


def test_no_binaries_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setattr(pgharness, "SYSTEM_ROOT", tmp_path / "none")
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"pgserver.*/bin.*pg_config"):
        pgharness.find_bindir()
    with pytest.raises(RuntimeError, match="no PostgreSQL server binaries"):
        PgCluster(tmp_path / "pg").start()


def test_missing_server_skips_locally_but_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgharness, "pg_unavailable", lambda: "no binaries here")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no binaries here"):
        require_pg()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"CI is set.*no binaries here"):
        require_pg()


def test_netns_unavailable_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns_mod, "_probe", [])
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert netns_mod.available() == "network namespaces need root"


def test_session_cluster_survives_a_forked_childs_exit() -> None:
    require_pg()
    import atexit

    import psycopg

    c = cluster_for_session()
    assert cluster_for_session() is c
    pid = os.fork()
    if pid == 0:  # the child runs its exit handlers as a normal interpreter exit would
        try:
            atexit._run_exitfuncs()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert c.running
    with psycopg.connect(c.url(), connect_timeout=10) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_cut_is_silent_and_the_client_detects_it(cluster: PgCluster, ns: NetNs) -> None:
    with client_in(ns, cluster.url(host=ns.server_ip), **CLIENT_KEEPALIVES) as client:
        assert client.ask("SELECT inet_client_addr()::text")["row"] == [f"{ns.ns_ip}/32"]
        ns.cut()
        answer = client.ask("SELECT 1", timeout=DETECT_WITHIN + 5)
        print(f"\n[pgharness] client-side detection after cut: {answer['seconds']:.2f}s")
        assert answer.get("error") == "OperationalError", answer
        assert answer["seconds"] < DETECT_WITHIN, answer
        # Not an RST nor an immediate send error: only the 3 s user timeout could end it.
        assert answer["seconds"] >= 2.0, answer


def test_heal_restores_the_link(cluster: PgCluster, ns: NetNs) -> None:
    with client_in(ns, cluster.url(host=ns.server_ip)) as client:
        ns.cut()
        ns.heal()
        assert client.ask("SELECT 1")["row"] == [1]


def test_server_ends_a_cut_session_and_frees_its_advisory_lock(
    cluster: PgCluster, ns: NetNs
) -> None:
    import psycopg

    url = cluster.url(host=ns.server_ip)
    with client_in(ns, url, options=SERVER_KEEPALIVES) as client, psycopg.connect(
        cluster.url(), autocommit=True, connect_timeout=10
    ) as outside:
        assert client.ask("SHOW tcp_user_timeout")["row"] == ["3000"]
        assert client.ask("SELECT 1 FROM pg_advisory_lock(42)")["row"] == [1]
        assert outside.execute("SELECT pg_try_advisory_lock(42)").fetchone() == (False,)
        ns.cut()
        cut_at = time.monotonic()
        deadline = cut_at + DETECT_WITHIN
        while True:
            row = outside.execute("SELECT pg_try_advisory_lock(42)").fetchone()
            if row == (True,):
                break
            assert time.monotonic() < deadline, "the server kept the cut session's lock"
            time.sleep(0.05)  # bounded poll: the server tells nobody when a session ends
        freed = time.monotonic() - cut_at
        print(f"\n[pgharness] server-side detection (advisory lock freed) after cut: {freed:.2f}s")
        assert freed >= 2.0  # again: silence, not a reset
        outside.execute("SELECT pg_advisory_unlock(42)")
