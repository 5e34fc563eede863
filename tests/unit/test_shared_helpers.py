"""The helpers several modules share: one atomic JSON writer, one importer and App loader,
one drain for wake pipes, one source of the option defaults."""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest

from mpjobs import App
from mpjobs.config.spec import JobSpec
from mpjobs.coordination.notify import drain_pipe
from mpjobs.files import write_json_atomic
from mpjobs.loading import UsageError, load_app
from mpjobs.options import DEFAULTS, Shape
from mpjobs.serialization import resolve_path


def test_write_json_atomic_replaces_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "leader.json"
    write_json_atomic(path, {"pid": 1})
    write_json_atomic(path, {"pid": 2, "token": "t"})
    assert json.loads(path.read_text()) == {"pid": 2, "token": "t"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["leader.json"]


def test_write_json_atomic_keeps_the_old_file_when_the_data_cannot_be_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pool.json"
    write_json_atomic(path, {"pid": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"pid": object()})
    assert json.loads(path.read_text()) == {"pid": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.json"]


def test_drain_pipe_reads_everything_and_returns_on_an_empty_pipe() -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        drain_pipe(r)  # empty: returns at once
        os.write(w, b"x" * 60_000)
        os.write(w, b"y" * 5)
        drain_pipe(r)
        with pytest.raises(BlockingIOError):
            os.read(r, 1)
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def fake_module(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("mpjobs_test_loading_mod")
    module.app = App(home="/nonexistent-mpjobs-home")  # type: ignore[attr-defined]
    module.ns = types.SimpleNamespace(inner=module.app)  # type: ignore[attr-defined]
    module.not_app = 42  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


def test_one_importer_for_jobs_handlers_and_apps(fake_module: str) -> None:
    app = resolve_path(f"{fake_module}:app")
    assert resolve_path(f"{fake_module}.app") is app
    assert load_app(f"{fake_module}:app") is app
    assert load_app(f"{fake_module}:ns.inner") is app
    with pytest.raises(ImportError, match=r"cannot import 'no_such_mod_xyz' \(from "):
        resolve_path("no_such_mod_xyz:f")
    with pytest.raises(ImportError, match=f"'{fake_module}' has no attribute 'nope'"):
        resolve_path(f"{fake_module}:nope")
    with pytest.raises(UsageError, match=f"'{fake_module}' has no attribute 'nope'"):
        load_app(f"{fake_module}:nope")
    with pytest.raises(UsageError, match=r"is a int, not an mpjobs\.App"):
        load_app(f"{fake_module}:not_app")


def test_load_app_from_a_file(tmp_path: Path) -> None:
    script = tmp_path / "jobs_file.py"
    script.write_text("from mpjobs import App\napp = App(home='/nonexistent-mpjobs-home')\n")
    assert isinstance(load_app(f"{script}:app"), App)
    with pytest.raises(UsageError, match="has no attribute 'other'"):
        load_app(f"{script}:other")
    with pytest.raises(UsageError, match="no file"):
        load_app(f"{tmp_path / 'missing.py'}:app")


def test_one_source_of_the_option_defaults() -> None:
    shape = Shape.of({}, "n")
    spec = JobSpec(id="x", handler="m:f", handler_kind="function")
    for key in ("queue", "priority", "max_attempts"):
        assert getattr(shape, key) == getattr(spec, key) == DEFAULTS[key]
    assert shape.retry_backoff == DEFAULTS["retry_backoff"]


def test_one_back_off_doubles_to_its_cap_and_starts_over() -> None:
    from mpjobs.backoff import Backoff, doubling

    assert [doubling(0.5, 30.0, n) for n in range(8)] == [0, 0.5, 1, 2, 4, 8, 16, 30]
    assert doubling(1.0, 60.0, 10_000) == 60.0  # no overflow however long it fails
    b = Backoff(0.1, 0.3)
    assert [b.next(), b.next(), b.next()] == [0.1, 0.2, 0.3] and b.failing
    b.reset()
    assert not b.failing and b.next() == 0.1
