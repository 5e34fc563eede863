"""Every example is run exactly as a user would run it, and must exit 0 leaving nothing behind.

Runs each `examples/*.py`, each `examples/*/run_example.py`, the script behind `make demo`
and the example block of README.md as a subprocess: cwd is the repo root, PYTHONPATH is
the repo root, and MPJOBS_HOME is a fresh directory per run. Pools are started in their
own process group, so "nothing left running" cannot be checked by looking at our
children only: every run is tagged with an environment variable that all its
descendants inherit, and after the run no live process may carry that tag.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TIMEOUT = 60.0
TAG = "MPJOBS_EXAMPLE_RUN"

SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))
DIRS = sorted(
    d for d in EXAMPLES.iterdir()
    if d.is_dir() and not d.name.startswith((".", "_"))
) if EXAMPLES.is_dir() else []  # fmt: skip


def tagged(tag: str) -> list[psutil.Process]:
    """Live processes whose environment carries this run's tag (they descend from it)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(TAG) == tag and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def wait_gone(tag: str, timeout: float) -> list[psutil.Process]:
    """Wait (bounded) for every tagged process to exit; return those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = tagged(tag)
        if not left or time.monotonic() >= deadline:
            return left
        psutil.wait_procs(left, timeout=min(0.5, max(0.0, deadline - time.monotonic())))


def run_example(argv: list[str], tmp_path: Path, label: str) -> None:
    """Run one example; assert exit 0 within TIMEOUT and no process of it left behind."""
    tag = uuid.uuid4().hex
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),  # only the repo: an example must not lean on test modules
        "MPJOBS_HOME": str(home),
        TAG: tag,
    }
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)
    text = out.decode(errors="replace")
    left = wait_gone(tag, timeout=15.0)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    assert not timed_out, f"{label} did not finish within {TIMEOUT:.0f} s; output:\n{text}"
    assert proc.returncode == 0, f"{label} exited with {proc.returncode}; output:\n{text}"
    assert not left, f"{label} left processes running: {[p.pid for p in left]}\n{text}"


@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_example(script: Path, tmp_path: Path) -> None:
    run_example([sys.executable, str(script.relative_to(ROOT))], tmp_path, str(script.name))


@pytest.mark.timeout(TIMEOUT + 60)
@pytest.mark.parametrize("directory", DIRS, ids=[d.name for d in DIRS])
def test_directory_example(directory: Path, tmp_path: Path) -> None:
    entry = directory / "run_example.py"
    if not entry.is_file():
        pytest.skip(f"examples/{directory.name}/ has no run_example.py to run yet")
    run_example([sys.executable, str(entry.relative_to(ROOT))], tmp_path, f"{directory.name}/")


def demo_script() -> str:
    """The script `make demo` runs, read from the Makefile so the two cannot drift apart."""
    makefile = (ROOT / "Makefile").read_text()
    match = re.search(r"^demo:.*\n\t\$\(BIN\)/python (\S+)", makefile, re.M)
    assert match, "Makefile has no `demo:` target running `$(BIN)/python <script>`"
    return match.group(1)


@pytest.mark.timeout(TIMEOUT + 60)
def test_make_demo_script(tmp_path: Path) -> None:
    script = demo_script()
    assert (ROOT / script).is_file(), f"make demo runs {script}, which does not exist"
    run_example([sys.executable, script], tmp_path, f"make demo ({script})")


def readme_example() -> str:
    """The Python block that follows the `<!-- example: run by tests -->` marker in README.md."""
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- example: run by tests -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md has no ```python block after '<!-- example: run by tests -->'"
    return match.group(1)


@pytest.mark.timeout(TIMEOUT + 60)
def test_readme_example(tmp_path: Path) -> None:
    script = tmp_path / "readme_example.py"
    script.write_text(readme_example())
    run_example([sys.executable, str(script)], tmp_path, "README example")
