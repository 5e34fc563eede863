"""`mpjobs status`: supervisors, workers, leader, queues and schedules, once or watched."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from mpjobs.cli.common import existing_app, ts
from mpjobs.operations import status_data


def render_status(data: dict[str, Any]) -> str:
    lines = [f"home: {data['home']}"]
    if data.get("store"):
        lines.append(f"store: {data['store']}")
    leader = data["leader"]
    lines.append(
        f"leader: pid {leader['pid']} since {ts(leader['since'])}" if leader else "leader: none"
    )
    sups = [p for p in data["processes"] if p["kind"] == "supervisor"]
    lines.append(f"supervisors: {len(sups)}")
    for sup in sups:
        lines.append(f"  supervisor pid {sup['pid']}")
        for p in data["processes"]:
            if p["parent"] != sup["token"]:
                continue
            rss = "-" if p["rss_bytes"] is None else f"{p['rss_bytes'] / 2**20:.1f} MiB"
            job = p["job"]
            what = f"job {job['id']} {job['name']} for {job['running_for_s']:.1f}s" if job else ""
            if job and job.get("progress") is not None:
                what += f" ({job['progress']:.0%})"
            lead = " (leader)" if data["leader"] and data["leader"]["token"] == p["token"] else ""
            lines.append(
                f"    {p['kind']:<11} pid {p['pid']:<7} {p['state']:<7} rss {rss:<10} {what}{lead}"
            )
    lines.append("queues:")
    estimated = data.get("queues_estimated", {})
    for queue, counts in sorted(data["queues"].items()):
        lines.append(
            f"  {queue}: {_waiting(counts.get('SCHEDULED', 0), queue, estimated)} waiting, "
            f"{counts.get('RUNNING', 0)} running"
        )
    if data["schedules"]:
        lines.append("schedules:")
        for s in data["schedules"]:
            lines.append(f"  {s['id']}: {s['state']}, next {ts(s['next_run_time'])}")
    return "\n".join(lines)


def _waiting(n: int, queue: str, estimated: dict[str, float | None]) -> str:
    """A queue's waiting figure; a deep queue's says it is the leader's last census."""
    if queue not in estimated:
        return str(n)
    at = estimated[queue]
    if at is None:
        return f"more than {n - 1:,}"
    return f"~{n:,} (counted {max(0.0, time.time() - at):.0f}s ago)"


def cmd_status(args: argparse.Namespace) -> int:
    app = existing_app(args)
    while True:
        data = status_data(app)
        out = json.dumps(data, indent=2, default=str) if args.json else render_status(data)
        if not args.watch:
            print(out)
            return 0
        print("\033[2J\033[H" + out, flush=True)
        time.sleep(1.0)
