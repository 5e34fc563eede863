"""Recurring schedules: cron with a time zone, `every`, options, and one fire per period.

Two pools share one home (as two services would). A schedule declared by both fires
exactly once per period, whichever process leads. Also shows the DST behaviour of a
cron schedule in Europe/Paris, max_instances, pause/resume and `app.schedules()`.
Prints a short summary and exits 0 within a few seconds.

    python examples/cron.py        # uses $MPJOBS_HOME if set, else a temp dir
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import mpjobs
from mpjobs.scheduling.triggers import CronTrigger

OWN_HOME = not os.environ.get("MPJOBS_HOME")
HOME = Path(os.environ.get("MPJOBS_HOME") or tempfile.mkdtemp(prefix="mpjobs-cron-"))
app = mpjobs.App(home=HOME)


@app.task
def report(kind: str) -> float:
    return time.time()


def declare() -> tuple[mpjobs.Schedule, mpjobs.Schedule]:
    """What every process does at import time. Same id -> one schedule, updated in place."""
    nightly = report.schedule("nightly").options(id="nightly-report")
    nightly = nightly.cron("30 2 * * *", tz="Europe/Paris")
    ticker = report.schedule("tick").options(id="ticker", max_instances=1).every("0.25s")
    return nightly, ticker


def dst_demo() -> None:
    paris = ZoneInfo("Europe/Paris")
    trig = CronTrigger("30 2 * * *", tz="Europe/Paris")
    for label, day in (("spring", datetime(2025, 3, 28, tzinfo=timezone.utc)),
                       ("autumn", datetime(2025, 10, 24, tzinfo=timezone.utc))):  # fmt: skip
        t, fires = day.timestamp(), []
        for _ in range(3):
            t = trig.next_after(t)
            fires.append(datetime.fromtimestamp(t, paris).strftime("%a %d %H:%M %Z"))
        print(f"  '30 2 * * *' Europe/Paris, {label}: {', '.join(fires)}")


def main() -> None:
    print("cron across DST (02:30 does not exist on 30 March, happens twice on 26 October):")
    dst_demo()
    nightly, ticker = declare()
    nrt = nightly.next_run_time
    local = nrt.astimezone(ZoneInfo("Europe/Paris")) if nrt else None
    declare()  # a second declaration (another process at import): still two schedules
    print(f"schedules: {[s.id for s in app.schedules()]}")
    print(f"nightly-report: {nightly.trigger}, next {local}")

    pools = [app.start(workers=1, graceful_timeout=5.0) for _ in range(2)]
    try:
        for p in pools:
            p.wait_ready(timeout=20)
        deadline = time.monotonic() + 15
        while len(ticker.jobs()) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        ticker.pause()
        print(f"ticker paused: {ticker.state}; resumed: ", end="")
        ticker.resume()
        print(ticker.state)
        ticker.pause()
        for job in ticker.jobs():
            job.wait(timeout=10)
    finally:
        for p in pools:
            p.stop(timeout=20)

    exec_ats = [j.exec_at for j in ticker.jobs(limit=1000)]
    dup = [t for t, n in Counter(exec_ats).items() if n > 1]
    ok = sum(j.status == mpjobs.JobStatus.SUCCESS for j in ticker.jobs(limit=1000))
    print(f"ticker: {len(exec_ats)} fires, two supervisors, {len(dup)} duplicated, {ok} succeeded")
    nightly.remove()
    ticker.remove()
    if dup or ok != len(exec_ats) or len(exec_ats) < 8:
        raise SystemExit("unexpected schedule behaviour")


if __name__ == "__main__":
    try:
        main()
    finally:
        if OWN_HOME:
            shutil.rmtree(HOME, ignore_errors=True)
