"""Checked by mypy (pyproject's [tool.mypy] files), never run: the typed handle chain.

`Task[P, R].schedule(...)` -> `JobBuilder[R]`, `.now()/.delay()/.at()` -> `Job[R]`, so
`result()` is R. Each `# type: ignore[...]` below must be needed (strict mode warns on
an unused one): that is the check that the wrong use is caught.
"""

from __future__ import annotations

from datetime import datetime, timezone

import mpjobs

app = mpjobs.App()


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(queue="text", retry_on=(ConnectionError,), soft_timeout="5m", timeout="10m")
async def fetch(url: str) -> str:
    return url


def typed_results() -> None:
    total: int = add.schedule(1, 2).now().result()
    page: str = fetch.schedule("https://example.com").delay("1s").result()
    later: int = add.schedule(1, 2).options(priority=5).at(datetime.now(timezone.utc)).result()
    waited: int = add.schedule(1, 2).now().wait(1).result()
    wrong: str = add.schedule(1, 2).now().result()  # type: ignore[assignment]
    add.schedule("1", 2)  # type: ignore[arg-type]
    print(total, page, later, waited, wrong)


def typed_bulk() -> None:
    sums: list[int] = [j.result() for j in add.map([(1, 2), (3, 4)], priority=1)]
    pages: list[str] = [j.result() for j in fetch.map([("https://example.com",)], delay=5)]
    wrong: list[str] = [j.result() for j in add.map([(1, 2)])]  # type: ignore[misc]
    print(sums, pages, wrong)


def untyped_lookups(job_id: str) -> None:
    job = app.get_job(job_id)
    if job is not None:
        anything: bytes = job.result()  # a handle by id is Job[Any]
        print(anything, job.args, job.kwargs, job.progress, job.meta, job.cron_expression)
