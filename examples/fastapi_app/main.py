"""FastAPI under `uvicorn --workers 3`: one mpjobs pool for all three web processes.

    uvicorn main:api --workers 3

`lifespan=app.lifespan` makes the web processes elect one of them (a lock in the home)
to run the pool; if it dies, another takes the pool over. Endpoints push and await
jobs without blocking the event loop.
"""

from fastapi import FastAPI

import mpjobs

app = mpjobs.App()  # home: $MPJOBS_HOME, else ./.mpjobs; must be a module-level name


@app.task
async def summarize(text: str) -> dict:
    words = text.split()
    return {"words": len(words), "first": words[0] if words else None}


@app.lifecycle(every="30s", scope="leader")
def refresh_cache():
    print("cache: warming up (in exactly one process)", flush=True)
    while True:
        yield  # one tick every 30 s, in the leader only
    # cleanup would go after the loop


api = FastAPI(lifespan=app.lifespan)


@api.post("/summaries")
async def create_summary(text: str) -> dict:
    job = summarize.schedule(text).now()
    await job.wait_async(timeout=30)
    return {"job": job.id, "summary": job.result()}


@api.get("/summaries/{job_id}")
async def get_summary(job_id: str) -> dict:
    job = app.get_job(job_id)
    if job is None:
        return {"status": "unknown"}
    return {"status": job.status.value, "summary": job.result() if job.is_done() else None}
