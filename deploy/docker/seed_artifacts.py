"""Copy the artifacts baked into the image into a shared artifact directory, without overwriting anything.

    python /app/deploy/docker/seed_artifacts.py SOURCE TARGET     # e.g. /artifacts /shared-artifacts

The artifact store keys each graph by model, version and the hash of its weights, so a file that already
exists under the same path in TARGET is the same artifact (or one a pod made there, e.g. a variant) and is
left alone. Each file is written under a temporary name and renamed into place, and ``model.onnx`` goes last in
its directory, after its manifest: a server reading TARGET meanwhile, or another pod seeding it at the same
time, never sees half a file. Standard library only; safe to run on every pod start.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path


def _order(path: Path) -> tuple[str, bool, str]:
    # Per directory, the graph after everything else (its manifest), so its presence means "complete".
    return (str(path.parent), path.name == "model.onnx", path.name)


def seed(source: Path, target: Path) -> tuple[int, int]:
    """Copy the files of ``source`` missing from ``target``; return (copied, already there)."""
    copied = present = 0
    for path in sorted((p for p in source.rglob("*") if p.is_file()), key=_order):
        destination = target / path.relative_to(source)
        if destination.exists():
            present += 1
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out, path.open("rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(scratch, 0o644)
            os.replace(scratch, destination)
        except BaseException:
            Path(scratch).unlink(missing_ok=True)
            raise
        copied += 1
    return copied, present


def main(argv: list[str]) -> int:
    """Entry point: ``SOURCE TARGET``."""
    if len(argv) != 2:
        print("usage: seed_artifacts.py SOURCE TARGET", file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    if not source.is_dir():
        print(f"seed_artifacts: {source} is not a directory", file=sys.stderr)
        return 1
    target.mkdir(parents=True, exist_ok=True)
    copied, present = seed(source, target)
    print(f"seed_artifacts: {copied} file(s) copied from {source} to {target}, {present} already there")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
