"""The in-process onnxruntime ceiling of each model: no HTTP, no batcher, no database.

For each model and batch size it opens the exported graph from the artifact store the way the server does
(``open_session`` with the model's default device, and the intra-op threads a deployment with ``instances``
instances gets), feeds it the model's example input repeated ``batch`` times from ``instances`` threads at once
(as a deployment's instances share its session), and reports

- ``ort``: ``session.run`` alone on ready arrays (the raw ceiling), and
- ``full``: ``to_arrays`` + ``session.run`` + ``from_outputs`` (what one server batch costs in the model).

The bench runs this module in a child process (``python -m bench.ceiling``) so that the ceiling has the machine
to itself and the bench's own process stays small; it prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ("CeilingResult", "measure_model")

WARMUP_CALLS = 3
MIN_CALLS = 5


@dataclass(frozen=True, slots=True)
class CeilingResult:
    """One model at one batch size."""

    model: str
    batch: int
    instances: int
    """Runs in flight side by side on the one session (a deployment's ``instances``)."""
    threads: int
    """onnxruntime intra-op threads of the session (0: onnxruntime's choice)."""
    provider: str
    ort_ms: float
    """Median milliseconds of one ``session.run``."""
    ort_items_per_s: float
    full_ms: float
    """Median milliseconds of ``to_arrays`` + ``session.run`` + ``from_outputs``."""
    full_items_per_s: float


def _time_calls(call: Callable[[], object], seconds: float, instances: int = 1) -> tuple[float, float]:
    """Median seconds per call and calls per second (all threads together), over about ``seconds`` of
    back-to-back calls from ``instances`` threads at once.
    """
    for _ in range(WARMUP_CALLS):
        call()
    times: list[list[float]] = [[] for _ in range(instances)]
    started = time.perf_counter()

    def loop(mine: list[float]) -> None:
        while len(mine) < MIN_CALLS or time.perf_counter() - started < seconds:
            before = time.perf_counter()
            call()
            mine.append(time.perf_counter() - before)

    threads = [threading.Thread(target=loop, args=(mine,)) for mine in times]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    every = [t for mine in times for t in mine]
    return statistics.median(every), len(every) / elapsed


def measure_model(
    model: object, onnx_path: Path, batches: list[int], seconds: float, instances: int = 1
) -> list[CeilingResult]:
    """Time ``model``'s graph at each batch size (``model`` is a ``cloudeasyml.ModelPlugin``), with the session a
    deployment of ``instances`` instances would open.
    """
    from cloudeasyml.core.serving import ServingConfig
    from cloudeasyml.runtime.config import session_threads
    from cloudeasyml.runtime.session import open_session

    serving = model.serving  # type: ignore[attr-defined]
    threads = session_threads(ServingConfig(instances=instances, intra_op_threads=serving.intra_op_threads))
    session = open_session(onnx_path, device=serving.device, intra_op_threads=threads)
    example = model.example_inputs()[0]  # type: ignore[attr-defined]
    results = []
    for batch in batches:
        items = [example] * batch
        arrays = model.to_arrays(items)  # type: ignore[attr-defined]
        ort_s, ort_rate = _time_calls(lambda a=arrays: session.run(a), seconds, instances)
        full_s, full_rate = _time_calls(
            lambda i=items: model.from_outputs(session.run(model.to_arrays(i))),  # type: ignore[attr-defined]
            seconds,
            instances,
        )
        results.append(
            CeilingResult(
                model=model.name,  # type: ignore[attr-defined]
                batch=batch,
                instances=instances,
                threads=threads,
                provider=session.providers[0],
                ort_ms=ort_s * 1000,
                ort_items_per_s=ort_rate * batch,
                full_ms=full_s * 1000,
                full_items_per_s=full_rate * batch,
            )
        )
    return results


def _measure_all(
    artifact_dir: Path, names: list[str], batches: list[int], seconds: float, instances: int
) -> dict[str, object]:
    """Every named model that is installed and exported; the others are reported as skipped, with why."""
    from cloudeasyml.plugins.catalog import build_catalog
    from cloudeasyml.plugins.manager import get_plugin_manager
    from cloudeasyml.runtime.artifacts import ArtifactStore
    from cloudeasyml.runtime.resolver import ArtifactResolver

    catalog = build_catalog(get_plugin_manager())
    resolver = ArtifactResolver(ArtifactStore(artifact_dir), export_on_load=False)
    results: list[dict[str, object]] = []
    skipped: dict[str, str] = {}
    for name in names:
        try:
            model = catalog.get(name).model
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the bench goes on with the rest
            skipped[name] = f"not installed ({exc})"
            continue
        path = resolver.find(model, model.version)
        if path is None:
            skipped[name] = f"not exported to {artifact_dir} (run `cloudeasyml export {name}`)"
            continue
        results.extend(asdict(r) for r in measure_model(model, path, batches, seconds, instances))
    return {"results": results, "skipped": skipped}


def main(argv: list[str] | None = None) -> int:
    """Command line: print the ceiling of the named models as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact-dir", type=Path, required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    parser.add_argument("--seconds", type=float, default=2.0, help="Timed seconds per measurement.")
    parser.add_argument("--instances", type=int, default=1, help="Runs in flight at once on the session.")
    args = parser.parse_args(argv)
    report = _measure_all(args.artifact_dir, args.models, args.batches, args.seconds, args.instances)
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
