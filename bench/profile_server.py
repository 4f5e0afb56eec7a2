"""Where a server's event loop spends its CPU per request: ``python -m bench.profile_server``.

Starts ``cloudeasyml serve --workers 1`` from each tree (as ``bench.ab`` does), loads a cell after a warm-up, and
profiles the event-loop thread during the timed load only, with cProfile timed in **that thread's CPU time**
(a wall-clock profile on a busy machine charges preemption to whatever call was running). Prints per tree the
functions with the most own time, in µs per request::

    python -m bench.profile_server --trees new=. old=/work/wt/old --cell housing:on --concurrency 64
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from bench.ab import Tree, TreeServer, _targets
from bench.load import LoadSpec, ensure_wrk, run_load
from bench.run import default_artifact_dir

__all__ = ("main",)

_HOOK = str(Path(__file__).parent / "_profile_hook")


def main(argv: list[str] | None = None) -> int:
    """Profile each tree on one cell and print the top functions by own time per request."""
    parser = argparse.ArgumentParser(prog="python -m bench.profile_server", description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", default=["new=."])
    parser.add_argument("--cell", default="housing:on")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--out", type=Path, help="Keep the profiles here (NAME.prof).")
    args = parser.parse_args(argv)
    ensure_wrk()
    with tempfile.TemporaryDirectory(prefix="cloudeasyml-prof-") as tmp, ExitStack() as stack:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for text in args.trees:
            tree = Tree.parse(text)
            tree.extra_path.append(_HOOK)
            tree.env["CLOUDEASYML_PROFILE_OUT"] = str(out / f"{tree.name}.prof")
            server = stack.enter_context(TreeServer(Path(tmp) / tree.name, default_artifact_dir(), tree))
            assert server.pid is not None
            url, body = _targets(server, [args.cell], 64)[args.cell]
            run_load(LoadSpec(url, body, server.token, args.concurrency, 2.0, 1.0))  # warm
            os.kill(server.pid, signal.SIGUSR1)
            load = run_load(LoadSpec(url, body, server.token, args.concurrency, args.duration, 0.0))
            os.kill(server.pid, signal.SIGUSR2)
            time.sleep(1.0)
            stats = pstats.Stats(str(out / f"{tree.name}.prof"))
            requests = max(load.requests, 1)
            total = sum(row[2] for row in stats.stats.values())  # type: ignore[attr-defined]
            print(f"\n== {tree.name}: {args.cell} c={args.concurrency}, {requests} requests, "
                  f"{load.requests_per_s:,.0f} req/s, profiled {total / requests * 1e6:,.0f} µs/request")  # fmt: skip
            rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)  # type: ignore[attr-defined]
            for (filename, line, func), (_cc, calls, tottime, cumtime, _callers) in rows[: args.top]:
                where = f"{Path(filename).parent.name}/{Path(filename).name}:{line}({func})"
                print(f"{tottime / requests * 1e6:8.1f} µs {cumtime / requests * 1e6:8.1f} cum "
                      f"{calls / requests:6.2f}/req  {where}")  # fmt: skip
            sys.stdout.flush()
            stack.close()  # one server at a time
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
