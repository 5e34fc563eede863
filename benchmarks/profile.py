"""Profile the hot paths with py-spy: a worker during a drain, and a pushing process.

    python -m benchmarks.profile [--seconds 4] [--native] [--out DIR]

Needs py-spy (`pip install py-spy`; it is not a dependency of the project). Writes the
raw collapsed stacks to DIR (default: a temporary directory) and prints, for each
profile, the share of samples by leaf frame and by category (SQLite calls, pickling,
the journal, waiting, other Python).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import tasks

ROOT = Path(__file__).resolve().parent.parent

PUSHER = """
import sys, time
from benchmarks import tasks
app = tasks.rehome(tasks.app, sys.argv[1])
tasks.noop.schedule().now()
t = time.perf_counter()
n = 0
while time.perf_counter() - t < float(sys.argv[2]):
    for _ in range(1000):
        tasks.noop.schedule().now()
    n += 1000
    for _ in range(5):
        app.push_many([tasks.noop.schedule() for _ in range(10_000)])
"""


def category(stack: str) -> str:
    frames = stack.split(";")
    leaf = frames[-1]
    native = any("sqlite3" in f.lower() or "pysqlite" in f for f in frames[-6:])
    if ("store/sqlite.py" in leaf or native) and "pickle" not in leaf:
        return "sqlite (statements, commits)"
    if "pickle" in leaf or "serialization.py" in leaf:
        return "pickle"
    if "journal.py" in leaf:
        return "journal write()"
    if "select" in leaf or "notify.py" in leaf:
        return "waiting (select)"
    return "other Python"


def summarise(raw: Path, title: str, top: int = 15) -> None:
    leaves: collections.Counter[str] = collections.Counter()
    cats: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        leaves[frames[-1]] += n
        cats[category(stack)] += n
    print(f"\n== {title}: {total} samples ({raw})")
    for cat, n in cats.most_common():
        print(f"  {100 * n / total:5.1f}%  {cat}")
    print("  top leaf frames:")
    for leaf, n in leaves.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {leaf}")


def pyspy() -> str:
    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not os.path.exists(exe):
        sys.exit("py-spy is not installed: pip install py-spy")
    return exe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--native", action="store_true", help="include C frames (slower)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="mpjobs-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    spy = pyspy()
    extra = ["--native"] if args.native else []
    with tempfile.TemporaryDirectory(prefix="mpjobs-profile-home-") as tmp:
        home = Path(tmp) / "drain"
        home.mkdir(mode=0o700)
        app = tasks.rehome(tasks.app, home)
        n = int(60_000 * args.seconds)  # more than 2 workers drain in the window
        for _ in range(n // 10_000):
            app.push_many([tasks.noop.schedule() for _ in range(10_000)])
        pool = app.start(workers=2)
        try:
            pool.wait_ready(workers=2)
            time.sleep(0.2)
            pid = pool.workers()[0]
            raw = out / "worker.raw"
            secs = str(max(1, round(args.seconds)))  # py-spy takes whole seconds
            subprocess.run([spy, "record", "-p", str(pid), "-d", secs, "-r", "250",
                            "--format", "raw", "-o", str(raw), "--nonblocking", *extra],
                           check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        finally:
            pool.stop()
        summarise(raw, f"worker {pid} during a drain of {n} no-op jobs")

        home = Path(tmp) / "push"
        home.mkdir(mode=0o700)
        raw = out / "pusher.raw"
        subprocess.run([spy, "record", "-r", "250", "--format", "raw", "-o", str(raw), *extra,
                        "--", sys.executable, "-c", PUSHER, str(home), str(args.seconds)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)  # fmt: skip
        summarise(raw, "a process pushing (now() x1000 then push_many 5x10k, in a loop)")


if __name__ == "__main__":
    main()
