"""How the suite runs on several pytest-xdist workers (``make test``: ``pytest -n 2``, xdist's ``load`` distribution:
each test to whichever worker is free).

A one-at-a-time run keeps one core busy (and waits on servers and databases): two workers use both cores. A test marked
``serial`` measures latency or timing that another test on the CPU would skew, so it runs while no other test runs:
every test holds the run's lock from its setup to its teardown, in shared mode, a ``serial`` test in exclusive mode
(``fcntl.flock``); a second lock file, taken briefly before either, keeps a waiting ``serial`` test from being
overtaken by the other worker's next tests forever (flock alone lets new shared holders in while an exclusive one
waits). The waiting worker sleeps in ``flock``: it takes no CPU from the test that runs alone.

Not ``--dist loadgroup``/``loadscope``/``loadfile``: they key their work by node id, and the schemathesis tests
(tests/integration/test_fuzz_openapi.py) are 26 items under one node id, of which they would run one; on pytest 9.2
``loadgroup`` does not group either (pytest-xdist#1386). So a module fixture is made once per worker that runs
one of its tests.

Outside xdist (a plain ``python -m pytest``) there is one process, which runs one test at a time: nothing is
locked. tests/conftest.py imports the hook below, which is what makes pytest call it.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

__all__ = ("SERIAL", "pytest_runtest_protocol", "run_directory", "running_alone", "worker_id")

SERIAL = "serial"
"""The marker of a test that must run while no other test runs."""


def worker_id() -> str | None:
    """The xdist worker this process is (``gw0``, ``gw1``...), or ``None`` outside xdist."""
    return os.environ.get("PYTEST_XDIST_WORKER")


def run_directory(factory: pytest.TempPathFactory) -> Path:
    """A directory that every worker of this run shares (each worker's base temporary directory is
    ``<the run's>/<worker id>``), and that no other run uses; outside xdist, the run's base temporary directory."""
    base = factory.getbasetemp()
    return base.parent if worker_id() is not None else base


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def running_alone(directory: Path, alone: bool) -> Iterator[None]:
    """Hold the run's test lock in ``directory`` until the block ends: exclusive when ``alone`` (no other test
    runs meanwhile), shared otherwise (other tests that are not ``serial`` may run meanwhile)."""
    with ExitStack() as held:
        # Through the turnstile first: while a serial test holds it, waiting for the shared holders to finish,
        # the other worker's next test waits here instead of joining them.
        with _flock(directory / "tests.turnstile", fcntl.LOCK_EX):
            held.enter_context(_flock(directory / "tests.lock", fcntl.LOCK_EX if alone else fcntl.LOCK_SH))
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[object]:
    """Under xdist, each test holds the run's lock from its setup to its teardown: shared, or exclusive when it is
    marked ``serial``."""
    if worker_id() is None:
        return (yield)
    # ``config._tmp_path_factory`` is where pytest's own ``tmp_path_factory`` fixture reads it from.
    directory = run_directory(item.config._tmp_path_factory)  # type: ignore[attr-defined]
    with running_alone(directory, alone=item.get_closest_marker(SERIAL) is not None):
        return (yield)
