"""A plain WSGI app: each request pushes a job and waits for its result."""

import json
from urllib.parse import parse_qs

from jobs import make_thumbnail


def application(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    name = query.get("name", ["cat.png"])[0]
    job = make_thumbnail.schedule(name, 128).now()  # committed before this returns
    result = job.wait(timeout=30).result()  # wakes on the store's change, no polling
    body = json.dumps({"job": job.id, "thumbnail": result}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
