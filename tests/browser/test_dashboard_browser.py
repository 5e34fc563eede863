"""The dashboard in a real headless Chromium (Debian's chromium and chromium-driver,
driven by Selenium), against a real `mpjobs dashboard` server process and a real pool:
what issue 12 says must be shown.

Without Chromium the tests skip saying why, except in CI (CI set), where they fail:
`make test` installs the packages where it can (root and apt-get).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dash_tasks
import pytest
from conftest import started, wait_for

import mpjobs
from mpjobs import JobStatus
from mpjobs.operations import status_data
from mpjobs.store.census import DEPTH_CAP

CHROMIUM = os.environ.get("MPJOBS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("MPJOBS_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = Path(__file__).parent.parent.parent / "docs" / "images"


def _unavailable(why: str) -> None:
    message = f"no browser for the dashboard tests: {why} (apt-get install chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(message + ", and CI is set")
    pytest.skip(message)


@pytest.fixture
def browser() -> Iterator[Any]:
    """A headless Chromium for one test (quit before the leftover-process check runs)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        _unavailable(f"selenium is not installed ({exc})")
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(path)):
            _unavailable(f"{path} is missing")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,860", "--disable-extensions", "--no-first-run"):  # fmt: skip
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except Exception as exc:
        _unavailable(f"chromium would not start: {type(exc).__name__}: {exc}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> int:
    """The status code of one request (errors included), for the server-side checks."""
    req = urllib.request.Request(url, method=method, headers=headers or {}, data=b"{}" if
                                 method == "POST" else None)  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _answers(url: str) -> bool:
    try:
        http(url)
        return True
    except OSError:
        return False


@contextmanager
def dashboard(home: Path, *args: str) -> Iterator[str]:
    """`mpjobs dashboard` on a free port, as a user starts it; its base URL inside."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpjobs", "dashboard", "--home", str(home), "--port", str(port),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy(),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: proc.poll() is not None or _answers(base + "api/config"), 30,
                 what="the dashboard server to answer")  # fmt: skip
        if proc.poll() is not None:
            raise AssertionError(f"mpjobs dashboard exited: {proc.stdout.read()}")  # type: ignore[union-attr]
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def screenshot(driver: Any, name: str) -> None:
    """Save a screenshot for docs/dashboard.md when MPJOBS_SCREENSHOTS is set."""
    if os.environ.get("MPJOBS_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1280, min(int(height) + 140, 2400))  # the whole page
        driver.save_screenshot(str(SCREENSHOTS / name))


WAIT = 20  # seconds any DOM state may take to appear (polling is every 2 s)


def until(driver: Any, predicate: Any, what: str) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT, poll_frequency=0.05).until(predicate, message=what)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


@pytest.fixture
def dapp(home: Path) -> mpjobs.App:
    return dash_tasks.make_app(home)


def test_overview_lists_the_live_workers(browser: Any, dapp: mpjobs.App, tmp_path: Path) -> None:
    began, release = tmp_path / "began", tmp_path / "release"
    deep = DEPTH_CAP + 5  # due in an hour: its count is the leader's census
    dash_tasks.add.map([(1, 1)] * deep, queue="later", delay=3600)
    with started(dapp, workers=2):
        done = [dash_tasks.add.schedule(i, i).now() for i in range(8)]
        done += [dash_tasks.fail.schedule("for the chart").now() for _ in range(2)]
        for j in done:
            j.wait(20)
        job = dash_tasks.hold.schedule(str(began), str(release)).now()
        wait_for(began.exists, 20, what="the held job to start")
        workers = {p["pid"] for p in status_data(dapp)["processes"] if p["kind"] == "worker"}
        assert len(workers) == 2
        with dashboard(dapp.home.path) as base:
            browser.get(base)

            def shown(d: Any) -> bool:
                rows = css(d, "#workers tr.proc[data-kind=worker]")
                pids = {int(r.get_attribute("data-pid")) for r in rows}
                return pids == workers and any(f"#{job.id}" in r.text for r in rows)

            until(browser, shown, "both workers, one running the held job")
            text = css(browser, "#workers")[0].text
            assert "supervisor" in text and "MiB" in text and "dash_tasks.hold" in text
            assert "pid" in css(browser, "#leader")[0].text
            charts = browser.find_element("css selector", ".cards + h2 + .cards").text
            assert "succeeded: 8 in the last hour" in charts and "failed: 2" in charts
            until(browser, lambda d: "last updated" in css(d, "#updated")[0].text, "last updated")
            until(browser, lambda d: f"~{deep} (counted" in css(d, "#queues")[0].text,
                  "the deep queue's census figure")  # fmt: skip
            screenshot(browser, "dashboard-overview.png")
        release.write_text("go")
        assert job.wait(20).result() == "released"


def test_failed_job_traceback_is_on_its_page(browser: Any, dapp: mpjobs.App) -> None:
    with started(dapp, workers=1):
        job = dash_tasks.fail.schedule("shown <b>in</b> the browser").now()
        job.wait(20)
    with dashboard(dapp.home.path) as base:
        browser.get(f"{base}#/job/{job.id}")
        pre = until(browser, lambda d: css(d, "#traceback"), "the traceback")[0]
        assert "Traceback (most recent call last)" in pre.text
        assert "ValueError: shown <b>in</b> the browser" in pre.text  # text, not markup
        assert css(browser, "#traceback b") == []
        assert css(browser, "#job-status")[0].text == "FAILED"
        body = browser.find_element("css selector", "#job").text
        assert "[object" not in body and "dash_tasks.fail" in body and "max_attempts" in body
        screenshot(browser, "dashboard-job.png")


def test_retry_from_the_failures_page_runs_the_job_again(
    browser: Any, dapp: mpjobs.App, tmp_path: Path
) -> None:
    flag = tmp_path / "failed-once"
    with started(dapp, workers=1):
        job = dash_tasks.fail_once.schedule(str(flag)).now()
        job.wait(20)
        assert job.status is JobStatus.FAILED and flag.exists()
        with dashboard(dapp.home.path, "--allow-actions") as base:
            browser.get(f"{base}#/failures")
            row = f"#jobs tr.job[data-id='{job.id}']"
            button = until(browser, lambda d: css(d, f"{row} button.retry"), "its retry button")
            button[0].click()
            wait_for(lambda: job.status is JobStatus.SUCCESS, 20, home=dapp.home.path,
                     what="the retried job to succeed")  # fmt: skip
            until(browser, lambda d: not css(d, row), "the job to leave the failures page")
        assert job.result() == "second time lucky" and job.attempts == 1


def test_a_paused_schedule_shows_paused(browser: Any, dapp: mpjobs.App) -> None:
    dash_tasks.add.schedule(1, 2).options(id="hourly").every("1h")
    dash_tasks.add.schedule(3, 4).options(id="nightly").cron("0 3 * * *").pause()
    with dashboard(dapp.home.path) as base:
        browser.get(f"{base}#/schedules")

        def state(d: Any, sid: str) -> str:
            cells = css(d, f"#schedules tr.schedule[data-id='{sid}'] td.state")
            return str(cells[0].text) if cells else ""

        until(browser, lambda d: state(d, "nightly") == "paused", "nightly shown paused")
        assert state(browser, "hourly") == "active"
        assert "every 1h" in css(browser, "#schedules")[0].text


def test_without_the_token_the_server_answers_401(browser: Any, dapp: mpjobs.App) -> None:
    dapp.store  # noqa: B018 - a home to look at
    with dashboard(dapp.home.path, "--token", "t0ken") as base:
        for path in ("", "api/overview", "api/jobs", "static/app.js", "metrics"):
            assert http(base + path) == 401, path
        assert http(base + "api/overview", headers={"Authorization": "Bearer t0ken"}) == 200
        browser.get(base)
        until(browser, lambda d: "token" in d.page_source, "the 401 answer")
        browser.get(f"{base}?token=t0ken")  # once: the HttpOnly cookie carries it after
        until(browser, lambda d: css(d, "#workers"), "the overview")
        assert "token=" not in browser.current_url
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly


def test_with_actions_off_buttons_are_absent_and_posts_refused(
    browser: Any, dapp: mpjobs.App
) -> None:
    with started(dapp, workers=1):
        job = dash_tasks.fail.schedule("no retry here").now()
        job.wait(20)
    dash_tasks.add.schedule(1, 1).options(id="hourly").every("1h")
    with dashboard(dapp.home.path) as base:
        for route, ready in (("#/failures", f"tr.job[data-id='{job.id}']"),
                             ("#/schedules", "tr.schedule[data-id='hourly']"),
                             (f"#/job/{job.id}", "#traceback")):  # fmt: skip
            browser.get(base + route)
            until(browser, lambda d, ready=ready: css(d, ready), f"{route} to load")
            assert css(browser, "button") == [] or all(
                b.get_attribute("type") == "submit" for b in css(browser, "button")
            ), route
            assert css(browser, "button.action") == []
        status = browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            f"fetch('api/jobs/{job.id}/retry', {{method: 'POST'}}).then(r => done(r.status));"
        )
        assert status == 403
        assert http(f"{base}api/jobs/{job.id}/retry", "POST") == 403
        assert http(f"{base}api/schedules/hourly/pause", "POST") == 403
    assert job.status is JobStatus.FAILED
    assert dapp.get_schedule("hourly").state == "active"  # type: ignore[union-attr]
