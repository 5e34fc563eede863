"""The leader's heartbeat record, the bound, and who counts as a silent leader.

These need no pool: a real process (a child that sleeps, or this test process) plays the
leader, and its beat is written by the same code a leader uses.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mpjobs
from mpjobs.coordination.leader import (
    Beat,
    Heartbeat,
    beat_path,
    kill_frozen,
    leader_timeout,
    read_beat,
    stale_leader,
)
from mpjobs.coordination.locks import LivenessLock
from mpjobs.errors import ConfigError
from mpjobs.home import Home


@pytest.fixture
def h(tmp_path: Path) -> Home:
    return Home.resolve(tmp_path / "home")


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield p
    finally:
        p.kill()
        p.wait()


def test_the_bound_defaults_to_10s_and_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MPJOBS_LEADER_TIMEOUT", raising=False)
    assert leader_timeout() == 10.0
    monkeypatch.setenv("MPJOBS_LEADER_TIMEOUT", "1.5")
    assert leader_timeout() == 1.5
    monkeypatch.setenv("MPJOBS_LEADER_TIMEOUT", "2m")
    assert leader_timeout() == 120.0
    for bad in ("0", "soon", "-3"):
        monkeypatch.setenv("MPJOBS_LEADER_TIMEOUT", bad)
        with pytest.raises(ConfigError, match="MPJOBS_LEADER_TIMEOUT"):
            leader_timeout()


def test_a_torn_or_resigned_record_reads_as_unknown() -> None:
    beat = Beat("c1-abc", 1234, 1700000000.25, 98765.4321)
    data = beat.encode()
    assert Beat.decode(data) == beat
    assert Beat.decode(data + b"older, longer record left behind\n") == beat
    torn = data.replace(b"98765", b"98700")  # half of a pwrite(): checksum mismatch
    assert Beat.decode(torn) is None
    assert Beat.decode(b"") is None
    assert Beat.decode(Beat("-", 0, 0.0, 0.0).encode()) is None  # resigned


def test_only_a_live_identified_silent_leader_is_stale(h: Home) -> None:
    liveness = LivenessLock(h.proc_lock("c-me"))
    liveness.acquire()
    try:
        hb = Heartbeat(h, "c-me", 0.2)
        hb.beat()
        assert read_beat(h) is not None
        assert stale_leader(h, timeout=60) is None  # fresh
        stale = stale_leader(h, timeout=0)  # any age is too old
        assert stale is not None and stale.token == "c-me" and stale.age >= 0
        hb.stop()  # resigned: nobody may kill a leader that left
        assert stale_leader(h, timeout=0) is None
    finally:
        liveness.release()


def test_a_dead_token_or_a_reused_pid_is_never_killed(
    h: Home, child: subprocess.Popen[bytes]
) -> None:
    import psutil

    started = psutil.Process(child.pid).create_time()
    # dead token: nobody holds its liveness lock
    with open(beat_path(h), "wb") as f:
        f.write(Beat("c-dead", child.pid, started, time.monotonic() - 100).encode())
    assert stale_leader(h, timeout=1) is None
    # live token, but the pid is another process now (its start time differs)
    liveness = LivenessLock(h.proc_lock("c-live"))
    liveness.acquire()
    try:
        with open(beat_path(h), "wb") as f:
            f.write(Beat("c-live", child.pid, started - 5, time.monotonic() - 100).encode())
        beat = read_beat(h)
        assert beat is not None and stale_leader(h, timeout=1) is None
        assert not kill_frozen(h, beat, 1)
        assert child.poll() is None
        # the same process, silent: it is killed
        with open(beat_path(h), "wb") as f:
            f.write(Beat("c-live", child.pid, started, time.monotonic() - 100).encode())
        beat = read_beat(h)
        assert beat is not None and kill_frozen(h, beat, 1)
        assert child.wait(10) == -9
    finally:
        liveness.release()


def test_lifecycle_timeout_is_checked_when_declared(tmp_path: Path) -> None:
    app = mpjobs.App(tmp_path / "home")

    def gen() -> Iterator[None]:
        yield

    with pytest.raises(ValueError, match="scope='leader' only"):
        app.lifecycle(every=1, scope="worker", timeout=5)(gen)
    with pytest.raises(ValueError, match="lifecycle timeout"):
        app.lifecycle(every=1, timeout="soon")(gen)
    with pytest.raises(ValueError, match="timeout must be positive"):
        app.lifecycle(every=1, timeout=0)(gen)
    app.lifecycle(every=1, timeout="30s")(gen)
    assert app.lifecycles[-1].timeout == 30.0
