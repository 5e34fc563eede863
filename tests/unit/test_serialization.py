"""How callables, arguments and results travel: import paths, cloudpickle, errors."""

from __future__ import annotations

import pickle
import threading

import pytest
import tasks

from mpjobs import SerializationError, serialization


def module_level(x: int) -> int:
    return x + 1


def test_import_path_of_module_function_and_task() -> None:
    assert serialization.import_path_of(module_level) == f"{__name__}:module_level"
    assert tasks.add.ref() == ("tasks:add", None)


def test_lambda_and_local_functions_are_pickled() -> None:
    def local(x: int) -> int:
        return x * 2

    for fn in (local, lambda x: x * 2):
        path, blob = serialization.callable_ref(fn)
        assert path is None and blob is not None
        assert serialization.load_callable(None, blob)(21) == 42


def test_load_callable_by_path_runs_undecorated_function() -> None:
    assert serialization.load_callable("tasks:add", None)(2, 3) == 5
    assert serialization.load_callable("tasks.add", None)(2, 3) == 5


def test_unknown_paths_raise_import_error_naming_the_path() -> None:
    with pytest.raises(ImportError, match="no_such_mod_q"):
        serialization.resolve_path("no_such_mod_q:f")
    with pytest.raises(ImportError, match="nope"):
        serialization.resolve_path("tasks:nope")
    with pytest.raises(SerializationError):
        serialization.load_callable(None, None)


@pytest.mark.parametrize("bad", ["", "x", "a b:c", "mod:", ":f", "1mod:f"])
def test_invalid_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        serialization.split_path(bad)


def test_dumps_round_trips_plain_and_cloudpickle_data() -> None:
    value = {"a": [1, 2.5, "x", None], "b": (b"bytes", {3})}
    assert serialization.loads(serialization.dumps(value)) == value
    fn = serialization.loads(serialization.dumps(lambda: 7))
    assert fn() == 7


@pytest.mark.parametrize("bad", [threading.Lock(), (i for i in range(2))], ids=["lock", "gen"])
def test_unpicklable_raises_serialization_error_naming_what(bad: object) -> None:
    with pytest.raises(SerializationError, match="arguments of t"):
        serialization.dumps(((bad,), {}), "arguments of t")


def test_exceptions_pickle_for_job_failed_error() -> None:
    err = ValueError("boom")
    back = pickle.loads(serialization.dumps(err))
    assert isinstance(back, ValueError) and str(back) == "boom"
