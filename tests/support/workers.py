"""How the suite runs on several pytest-xdist workers (``make test``: ``pytest -n 2``).

Most tests wait on sockets, server processes and databases, so two of them at once fit on two cores. Two rules:

- Tests are handed out one at a time, to whichever worker is free, except the tests of a module that share a
  module-scoped fixture (an export, a cluster of servers, a virtual environment): those go to one worker together,
  so the fixture is made once (``TogetherScheduling``; xdist's own ``--dist loadgroup`` no longer groups on pytest
  9.2, whose node ids it can no longer rewrite).
- A test marked ``serial`` measures latency or timing that another test on the CPU would skew, so it runs while no
  other test runs. Every test holds the run's lock from its setup to its teardown, in shared mode, a ``serial``
  test in exclusive mode (``fcntl.flock``); a second lock file, taken briefly before either, keeps a waiting
  ``serial`` test from being overtaken by the other worker's next tests forever (flock alone lets new shared
  holders in while an exclusive one waits). The waiting worker sleeps in ``flock``: it takes no CPU from the test
  that runs alone.

Outside xdist (a plain ``python -m pytest``) there is one process, which runs one test at a time: nothing is
locked. tests/conftest.py imports the hooks below, which is what makes pytest call them.
"""

from __future__ import annotations

import ast
import fcntl
import functools
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from xdist.scheduler import LoadScopeScheduling

__all__ = (
    "SERIAL",
    "TogetherScheduling",
    "pytest_runtest_protocol",
    "pytest_xdist_make_scheduler",
    "run_directory",
    "running_alone",
    "shares_a_module_fixture",
    "worker_id",
)

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


_SHARED_SCOPES = frozenset({"module", "package", "session"})


@functools.cache
def shares_a_module_fixture(path: Path) -> bool:
    """Whether the test module at ``path`` defines a fixture of module scope or wider (its tests share it)."""
    try:
        tree = ast.parse(path.read_text(), str(path))
    except (OSError, SyntaxError, ValueError):
        return False  # not a module we can read: its tests are scheduled one by one
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
        if name != "fixture":
            continue
        for keyword in node.keywords:
            if keyword.arg == "scope" and isinstance(keyword.value, ast.Constant):
                if keyword.value.value in _SHARED_SCOPES:
                    return True
    return False


class TogetherScheduling(LoadScopeScheduling):  # type: ignore[misc]
    """xdist's ``load`` distribution (each test to the next free worker), except that the tests of a module that
    shares a module-scoped fixture form one unit of work, which one worker runs (``shares_a_module_fixture``)."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return module if shares_a_module_fixture(self.config.rootpath / module) else nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> TogetherScheduling | None:
    """With xdist's default distribution (``-n N``, that is ``--dist load``), schedule with ``TogetherScheduling``;
    any other ``--dist`` is xdist's own."""
    if config.getvalue("dist") != "load":
        return None
    return TogetherScheduling(config, log)
