"""The dashboard over HTTP, without a browser: the token guard on every path, actions
refused when off or cross-origin, the pages of jobs (filters, keyset pages, text
search), one job's detail shown without running its pickles, schedule actions."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dash_tasks
import pytest
from starlette.testclient import TestClient

import mpjobs
from mpjobs import JobStatus

TOKEN = "s3cret-token"


@pytest.fixture
def dapp(home: Path) -> mpjobs.App:
    return dash_tasks.make_app(home)


def client(app: mpjobs.App, **opts: object) -> TestClient:
    return TestClient(app.dashboard(**opts), follow_redirects=False)


def failed_job(app: mpjobs.App, message: str = "dash-boom") -> mpjobs.Job:
    with app.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=1)
        job = dash_tasks.fail.schedule(message).now()
        job.wait(20)
    assert job.status is JobStatus.FAILED
    return job


@pytest.fixture
def later(dapp: mpjobs.App) -> Iterator[list[mpjobs.Job]]:
    """Jobs that wait an hour: three queues, two tasks."""
    jobs = []
    for i in range(30):
        job = dash_tasks.add.schedule(i, i) if i % 2 else dash_tasks.fail.schedule(f"needle-{i}")
        jobs.append(job.options(queue=f"q{i % 3}").delay(3600))
    yield jobs


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/api/overview", "/api/jobs", "/metrics"])
def test_every_path_needs_the_token(dapp: mpjobs.App, path: str) -> None:
    dapp.store  # noqa: B018 - a store to look at
    c = client(dapp, token=TOKEN)
    r = c.get(path)
    assert r.status_code == 401 and "token" in r.json()["error"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = c.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code in (200, 501), ok.text  # 501: /metrics without its extra


def test_token_in_the_query_once_sets_an_httponly_cookie(dapp: mpjobs.App) -> None:
    dapp.store  # noqa: B018
    c = client(dapp, token=TOKEN)
    r = c.get(f"/?token={TOKEN}")
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert c.get("/").status_code == 200  # the client kept the cookie
    assert c.get("/api/overview").status_code == 200
    c.cookies.clear()
    assert c.get("/api/overview").status_code == 401


def test_actions_off_refuse_every_post_and_say_so(dapp: mpjobs.App) -> None:
    job = failed_job(dapp)
    c = client(dapp)
    assert c.get("/api/config").json()["actions"] is False
    for path in (f"/api/jobs/{job.id}/retry", "/api/jobs/retry", f"/api/jobs/{job.id}/cancel"):
        r = c.post(path, json={})
        assert r.status_code == 403 and "--allow-actions" in r.json()["error"]
    assert job.status is JobStatus.FAILED


def test_cross_origin_posts_are_refused(dapp: mpjobs.App) -> None:
    job = failed_job(dapp)
    c = client(dapp, allow_actions=True)
    path = f"/api/jobs/{job.id}/retry"
    assert c.post(path, headers={"Origin": "http://evil.example"}).status_code == 403
    assert c.post(path, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert c.post(path, headers={"Origin": "null"}).status_code == 403
    assert job.status is JobStatus.FAILED
    r = c.post(path, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert job.status is JobStatus.SCHEDULED


def test_jobs_pages_filter_and_continue_by_keyset(dapp: mpjobs.App, later: list) -> None:
    c = client(dapp)
    seen: list[int] = []
    url = "/api/jobs?limit=7"
    while True:
        page = c.get(url).json()
        seen += [j["id"] for j in page["jobs"]]
        if page["next_before"] is None:
            break
        url = f"/api/jobs?limit=7&before={page['next_before']}"
    assert seen == sorted((int(j.id) for j in later), reverse=True)

    q1 = c.get("/api/jobs?queue=q1&limit=100").json()["jobs"]
    assert {j["queue"] for j in q1} == {"q1"} and len(q1) == 10
    adds = c.get("/api/jobs?task=dash_tasks.add&queue=q1").json()["jobs"]
    assert adds and {(j["name"], j["queue"]) for j in adds} == {("dash_tasks.add", "q1")}
    assert c.get("/api/jobs?status=SUCCESS").json()["jobs"] == []
    assert len(c.get("/api/jobs?status=scheduled&limit=100").json()["jobs"]) == 30
    assert c.get("/api/jobs?status=BOGUS").status_code == 400

    found = c.get("/api/jobs?q=NEEDLE-4").json()  # arguments, any case
    assert [j["id"] for j in found["jobs"]] == [int(later[4].id)]
    assert found["scanned"] == 30 and found["scan_limited"] is False


def test_detail_shows_traceback_and_never_runs_a_pickle(
    dapp: mpjobs.App, tmp_path: Path
) -> None:
    job = failed_job(dapp, "shown-in-detail")
    c = client(dapp)
    d = c.get(f"/api/jobs/{job.id}").json()
    assert d["status"] == "FAILED" and "Traceback" in d["traceback"]
    assert "ValueError: shown-in-detail" in d["traceback"]
    assert d["arguments"] == "(('shown-in-detail',), {})" and d["arguments_safe"] is True
    assert [t["event"] for t in d["timeline"]] == ["created", "due", "started", "finished"]

    target = tmp_path / "written-by-unpickling"
    evil = dash_tasks.takes.schedule(dash_tasks.WritesFile(str(target))).delay(3600)
    d = c.get(f"/api/jobs/{evil.id}").json()
    assert d["arguments_safe"] is False and "io.open" in d["arguments"]
    assert not target.exists()
    assert c.get("/api/jobs?q=zzz-not-there").json()["jobs"] == []  # the search reads it too
    assert not target.exists()
    assert c.get("/api/jobs/999999").status_code == 404


def test_schedule_actions(dapp: mpjobs.App, tmp_path: Path) -> None:
    sched = dash_tasks.add.schedule(1, 2).options(id="every-hour").every("1h")
    c = client(dapp, allow_actions=True)
    rows = c.get("/api/schedules").json()
    assert [(s["id"], s["paused"]) for s in rows] == [("every-hour", False)]
    assert c.post("/api/schedules/every-hour/pause").status_code == 200
    assert sched.state == "paused" and c.get("/api/schedules").json()[0]["paused"] is True
    r = c.post("/api/schedules/every-hour/run").json()
    job = dapp.get_job(r["job_id"])
    assert job is not None and job.status is JobStatus.SCHEDULED
    assert dapp.store.get(int(job.id)).schedule_id == "every-hour"  # type: ignore[union-attr]
    assert c.get("/api/schedules").json()[0]["last"]["id"] == int(job.id)
    assert c.post("/api/schedules/every-hour/resume").status_code == 200
    assert sched.state == "active"
    assert c.post("/api/schedules/every-hour/explode").status_code == 404
    assert c.post("/api/schedules/every-hour/remove").status_code == 200
    assert dapp.schedules() == []
    assert c.post("/api/schedules/every-hour/pause").status_code == 404


def test_bulk_retry_by_filter_and_overview(dapp: mpjobs.App) -> None:
    with dapp.start(workers=1, graceful_timeout=5.0) as pool:
        pool.wait_ready(timeout=20, workers=1)
        a = [dash_tasks.fail.schedule("a").options(queue="qa").now() for _ in range(3)]
        b = [dash_tasks.fail.schedule("b").options(queue="qb").now() for _ in range(2)]
        for j in a + b:
            j.wait(20)
        c = client(dapp, allow_actions=True)
        ov = c.get("/api/overview").json()
        assert {p["kind"] for p in ov["processes"]} >= {"supervisor", "worker"}
        assert sum(ov["last_hour"]["failed"]) == 5 and len(ov["last_hour"]["failed"]) == 60
        fails = c.get("/api/failures?queue=qa").json()["jobs"]
        assert sorted(j["id"] for j in fails) == sorted(int(j.id) for j in a)
        r = c.post("/api/jobs/retry", json={"status": ["FAILED"], "queue": "qa"})
        assert r.json() == {"done": 3, "refused": 0}
        for j in a:
            j.wait(20)
    assert all(j.status is JobStatus.FAILED and j.attempts == 1 for j in a)
    assert all(j.status is JobStatus.FAILED for j in b)
