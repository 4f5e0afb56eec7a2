"""``BufferedHistogram`` adds to prometheus-client's histogram values directly at flush (the library has no call that
adds many observations at once): here a buffered and a plain histogram observe the same values and must render the
same exposition, in one process and with ``PROMETHEUS_MULTIPROC_DIR`` (which prometheus-client reads at import, so
that case runs in a child process). A change in the library's internals fails here.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from cloudeasyml.metering.metrics import BufferedHistogram

VALUES = (0.0, 0.0001, 0.0005, 0.0007, 0.001, 0.003, 0.2, 1.0, 7.5, 30.0, 31.0, 1e9)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_RENDER_BOTH = """
import sys
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from cloudeasyml.metering.metrics import BufferedHistogram
values, buckets = eval(sys.argv[1]), eval(sys.argv[2])
plain = Histogram("plain", "p", ("route",), buckets=buckets, registry=None)
buffered = Histogram("buffered", "b", ("route",), buckets=buckets, registry=None)
plain_child, buffered_child = plain.labels("/predict"), BufferedHistogram(buffered.labels("/predict"))
for value in values:
    plain_child.observe(value)
    buffered_child.observe(value)
buffered_child.flush()
buffered_child.flush()  # nothing new: adds nothing
registry = CollectorRegistry()
MultiProcessCollector(registry)
print(generate_latest(registry).decode())
"""


def _series(text: str, name: str) -> list[str]:
    return sorted(line.removeprefix(name) for line in text.splitlines() if line.startswith(name + "_"))


def test_buffered_and_plain_histograms_render_the_same_in_one_process() -> None:
    registry = CollectorRegistry()
    plain = Histogram("plain", "p", ("route",), buckets=BUCKETS, registry=registry).labels("/predict")
    buffered_parent = Histogram("buffered", "b", ("route",), buckets=BUCKETS, registry=registry)
    buffered = BufferedHistogram(buffered_parent.labels("/predict"))
    for value in VALUES:
        plain.observe(value)
        buffered.observe(value)
    before = generate_latest(registry).decode()
    assert 'buffered_count{route="/predict"} 0.0' in before  # nothing reaches the library before the flush
    buffered.flush()
    text = generate_latest(registry).decode()
    assert _series(text, "plain") == _series(text, "buffered")
    assert 'buffered_count{route="/predict"} 12.0' in text


def test_buffered_and_plain_histograms_render_the_same_across_processes(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)}
    shown = subprocess.run(
        [sys.executable, "-c", _RENDER_BOTH, repr(VALUES), repr(BUCKETS)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert _series(shown, "plain") == _series(shown, "buffered")
    assert 'buffered_count{route="/predict"} 12.0' in shown
    assert list(tmp_path.glob("histogram_*.db")), "the values went through the memory-mapped files"


def test_observations_from_many_threads_are_all_counted() -> None:
    registry = CollectorRegistry()
    parent = Histogram("h", "h", ("model",), buckets=BUCKETS, registry=registry)
    buffered = BufferedHistogram(parent.labels("tiny"))
    threads = [threading.Thread(target=lambda: [buffered.observe(0.001) for _ in range(20_000)]) for _ in range(4)]
    flusher_stop = threading.Event()

    def flush_often() -> None:
        while not flusher_stop.is_set():
            buffered.flush()

    flusher = threading.Thread(target=flush_often)
    flusher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flusher_stop.set()
    flusher.join()
    buffered.flush()
    text = generate_latest(registry).decode()
    assert 'h_count{model="tiny"} 80000.0' in text
    assert math.isclose(float(text.split('h_sum{model="tiny"} ')[1].split()[0]), 80.0, rel_tol=1e-9)


def test_nan_is_ignored_rather_than_breaking_the_series() -> None:
    registry = CollectorRegistry()
    buffered = BufferedHistogram(Histogram("n", "n", buckets=BUCKETS, registry=registry))
    buffered.observe(float("nan"))
    buffered.observe(0.001)
    buffered.flush()
    assert "n_count 1.0" in generate_latest(registry).decode()
