"""Rebuild ``src/cloudeasyml_sentiment/data/vader_sentences.csv`` from the vaderSentiment 3.3.2 sdist.

The sdist on PyPI carries ``additional_resources/hutto_ICWSM_2014.tar.gz``: the human-rated sentence sets of
Hutto & Gilbert (2014). Each sentence has the mean of at least 20 raters' scores on a -4 .. +4 scale. This script
keeps the clearly polar ones (``|mean| >= 0.5``), turns them into ``negative`` / ``positive`` labels and writes one
CSV. Run it once by hand; the plugin never needs vaderSentiment itself::

    pip download --no-deps --no-binary :all: -d /tmp/vader vaderSentiment==3.3.2
    python scripts/prepare_data.py /tmp/vader/vaderSentiment-3.3.2.tar.gz
"""

from __future__ import annotations

import argparse
import csv
import html
import io
import tarfile
from pathlib import Path

OUTPUT = Path(__file__).resolve().parents[1] / "src" / "cloudeasyml_sentiment" / "data" / "vader_sentences.csv"
INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
SOURCES = {
    "tweets": "tweets_GroundTruth.txt",
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
}
POLARITY_THRESHOLD = 0.5
"""Sentences whose mean rating lies within this distance of 0 are neutral-ish and left out."""


def _read_member(archive: tarfile.TarFile, suffix: str) -> bytes:
    for member in archive.getmembers():
        if member.name.endswith(suffix):
            handle = archive.extractfile(member)
            if handle is not None:
                return handle.read()
    raise FileNotFoundError(f"{suffix} not found in the archive")


def ground_truth_rows(sdist: Path) -> list[tuple[str, str, str, str]]:
    """``(text, label, source, rating)`` rows of every polar, first-seen sentence in the sdist."""
    with tarfile.open(sdist) as outer:
        inner_bytes = _read_member(outer, INNER_ARCHIVE)
    rows = []
    seen: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
        for source, filename in SOURCES.items():
            for line in _read_member(inner, filename).decode("utf-8").splitlines():
                if not line.strip():
                    continue
                _id, rating, text = line.split("\t", 2)
                text = " ".join(html.unescape(text).split())
                mean = float(rating)
                # Duplicates (e.g. "I love it!") would otherwise sit on both sides of the train/validation split.
                if abs(mean) < POLARITY_THRESHOLD or not text or text.lower() in seen:
                    continue
                seen.add(text.lower())
                rows.append((text, "positive" if mean > 0 else "negative", source, f"{mean:.3f}"))
    return rows


def main() -> None:
    """Write the CSV from the sdist given on the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sdist", type=Path, help="vaderSentiment-3.3.2.tar.gz")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    rows = ground_truth_rows(args.sdist)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with args.output.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(("text", "label", "source", "rating"))
        writer.writerows(rows)
    print(f"wrote {len(rows)} sentences to {args.output}")


if __name__ == "__main__":
    main()
