"""The lock that lets a ``serial`` test run alone while ``make test`` runs the others on two xdist workers
(tests/support/workers.py): its semantics with threads, then a real ``pytest -n 2`` run with the hook."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.workers import running_alone

ROOT = Path(__file__).resolve().parents[2]


class Holder:
    """A thread that holds the lock (shared or exclusive) from when it gets it until ``release()``."""

    def __init__(self, directory: Path, alone: bool) -> None:
        self.inside = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(directory, alone), daemon=True)
        self._thread.start()

    def _run(self, directory: Path, alone: bool) -> None:
        with running_alone(directory, alone):
            self.inside.set()
            self._release.wait(10)

    def release(self) -> None:
        self._release.set()
        self._thread.join(10)
        assert not self._thread.is_alive()


def test_shared_holders_run_together_and_an_exclusive_one_waits_for_them(tmp_path: Path) -> None:
    first, second = Holder(tmp_path, alone=False), Holder(tmp_path, alone=False)
    assert first.inside.wait(5) and second.inside.wait(5)  # two tests at once
    alone = Holder(tmp_path, alone=True)
    assert not alone.inside.wait(0.2)
    first.release()
    assert not alone.inside.wait(0.2)
    second.release()
    assert alone.inside.wait(5)
    alone.release()


def test_a_waiting_serial_test_is_not_overtaken_by_new_shared_holders(tmp_path: Path) -> None:
    running = Holder(tmp_path, alone=False)
    assert running.inside.wait(5)
    alone = Holder(tmp_path, alone=True)
    time.sleep(0.1)  # it waits for ``running``, holding the turnstile
    later = Holder(tmp_path, alone=False)  # the other worker's next test
    assert not later.inside.wait(0.2)
    running.release()
    assert alone.inside.wait(5)
    assert not later.inside.wait(0.2)  # not while the serial test runs
    alone.release()
    assert later.inside.wait(5)
    later.release()


# Plugins this run does not need, off: each worker would import them (seconds on this machine).
QUIET = [f"-pno:{name}" for name in ("cacheprovider", "hypothesispytest", "schemathesis", "faker", "anyio", "asyncio")]
CONFTEST = "from tests.support.workers import pytest_runtest_protocol  # noqa: F401\n"
TESTS = """
import json, os, time
import pytest

def _record(name):
    start = time.time()
    time.sleep(0.4)
    with open(os.environ["RECORD"], "a") as out:
        out.write(json.dumps([name, start, time.time(), os.environ.get("PYTEST_XDIST_WORKER")]) + "\\n")

@pytest.mark.parametrize("n", range(6))
def test_parallel(n):
    _record(f"parallel-{n}")

@pytest.mark.serial
@pytest.mark.parametrize("n", range(2))
def test_serial(n):
    _record(f"serial-{n}")
"""


def test_under_xdist_a_serial_test_overlaps_no_other_while_the_others_overlap(tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text(CONFTEST)
    (suite / "test_timing.py").write_text(TESTS)
    (suite / "pytest.ini").write_text("[pytest]\nmarkers =\n    serial: runs alone\n")
    record = tmp_path / "record.jsonl"
    env = {
        **os.environ,
        "RECORD": str(record),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "--basetemp", str(tmp_path / "t"), *QUIET],
        cwd=suite,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    runs = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(runs) == 8 and {worker for *_, worker in runs} == {"gw0", "gw1"}

    def overlap(a: list, b: list) -> bool:
        return a[1] < b[2] and b[1] < a[2]

    serial = [run for run in runs if run[0].startswith("serial")]
    others = [run for run in runs if run not in serial]
    assert not [(s[0], o[0]) for s in serial for o in runs if o is not s and overlap(s, o)]
    # The check means something: the other tests did run two at a time.
    assert any(overlap(a, b) for a in others for b in others if a is not b)
