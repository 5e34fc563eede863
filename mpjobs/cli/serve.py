"""`mpjobs dashboard` and `mpjobs metrics`: the two long-running HTTP servers."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

from mpjobs.cli.common import existing_app
from mpjobs.loading import UsageError

TOKEN_ENV = "MPJOBS_DASHBOARD_TOKEN"


def observability(name: str) -> Any:
    """mpjobs.observability.NAME, imported when first needed (its extras are optional)."""
    try:
        return importlib.import_module(f"mpjobs.observability.{name}")
    except ImportError as exc:
        raise UsageError(f"mpjobs.observability.{name} is not available: {exc}") from None


def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise UsageError(
            "mpjobs dashboard needs uvicorn: pip install 'mpjobs[dashboard]'"
        ) from None
    app = existing_app(args)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    asgi = app.dashboard(allow_actions=args.allow_actions, token=token)
    where = f"http://{args.host}:{args.port}/"
    print(
        f"mpjobs dashboard for {app.home.path} on {where} (actions "
        f"{'on' if args.allow_actions else 'off'}, token {'required' if token else 'none'})",
        file=sys.stderr, flush=True,
    )  # fmt: skip
    uvicorn.run(asgi, host=args.host, port=args.port, log_level="warning", lifespan="off")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    metrics = observability("metrics")
    metrics.serve(existing_app(args), args.host, args.port)
    return 0
