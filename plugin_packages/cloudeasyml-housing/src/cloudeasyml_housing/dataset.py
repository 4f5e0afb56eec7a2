"""The housing data: reading the CSV, the held-out split and the regression metrics. numpy only.

The CSV keeps the column names and ``yes``/``no`` values of Ecdat's ``Housing`` data set (546 house sales in
Windsor, Ontario, 1987; Anglin & Gencay 1996). Prices in the file are dollars; everything after
``read_csv`` works in thousands of dollars.
"""

from __future__ import annotations

import csv
import math
from importlib.resources import files
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = (
    "BOOLEAN_COLUMNS",
    "FEATURE_COLUMNS",
    "PRICE_COLUMN",
    "PRICE_UNIT",
    "HousingData",
    "read_csv",
    "regression_metrics",
    "shipped_data_path",
    "split_indices",
)

FEATURE_COLUMNS: tuple[str, ...] = (
    "lotsize", "bedrooms", "bathrms", "stories", "garagepl",
    "driveway", "recroom", "fullbase", "gashw", "airco", "prefarea",
)  # fmt: skip
"""CSV columns of the graph's 11 features, in the graph's column order."""
BOOLEAN_COLUMNS = frozenset({"driveway", "recroom", "fullbase", "gashw", "airco", "prefarea"})
PRICE_COLUMN = "price"
PRICE_UNIT = 1000.0
"""The model predicts prices in thousands of dollars (see ``HousePrice``)."""
MIN_ROWS = 5
"""Fewest data rows ``read_csv`` accepts: enough for two held-out rows and some to train on."""

_TRUE = frozenset({"yes", "true", "1", "y", "t"})
_FALSE = frozenset({"no", "false", "0", "n", "f"})


class HousingData(NamedTuple):
    """A data set as arrays."""

    features: np.ndarray
    """float32 ``[n, 11]`` in ``FEATURE_COLUMNS`` order; booleans are 0 or 1."""
    price: np.ndarray
    """float32 ``[n]``: sale prices in thousands of dollars."""


def shipped_data_path() -> Path:
    """The CSV shipped inside the package (the data the shipped weights were trained on)."""
    return Path(str(files("cloudeasyml_housing") / "data" / "housing.csv"))


def _cell(value: str | None, column: str, line: int) -> float:
    if value is None or value.strip() == "":
        raise ValueError(f"line {line}: no value in column {column!r}")
    text = value.strip().lower()
    if column in BOOLEAN_COLUMNS:
        if text in _TRUE:
            return 1.0
        if text in _FALSE:
            return 0.0
        raise ValueError(f"line {line}: column {column!r} must be yes or no, not {value!r}")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"line {line}: column {column!r} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"line {line}: column {column!r} must be a finite number >= 0, not {value!r}")
    if column in (PRICE_COLUMN, "lotsize") and number == 0:
        raise ValueError(f"line {line}: column {column!r} must be above 0")
    return number


def read_csv(path: Path) -> HousingData:
    """Read a CSV with a header row holding at least ``price`` and the ``FEATURE_COLUMNS``.

    Extra columns (such as R's unnamed row number) are ignored; booleans may be yes/no, true/false or 1/0.

    Raises:
        ValueError: the file has no header, lacks columns, holds a bad value (the message names its line)
            or has fewer than ``MIN_ROWS`` rows.
    """
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or ()]
        wanted = (PRICE_COLUMN, *FEATURE_COLUMNS)
        missing = [column for column in wanted if column not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)}; the CSV needs a header with "
                f"{', '.join(wanted)} (as in the shipped data/housing.csv)"
            )
        reader.fieldnames = header
        rows = [[_cell(row.get(column), column, reader.line_num) for column in wanted] for row in reader]
    if len(rows) < MIN_ROWS:
        raise ValueError(f"{path}: {len(rows)} data row(s); training needs at least {MIN_ROWS}")
    table = np.asarray(rows, dtype=np.float64)
    return HousingData(features=table[:, 1:].astype(np.float32), price=(table[:, 0] / PRICE_UNIT).astype(np.float32))


def split_indices(rows: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle ``range(rows)`` with ``seed`` and cut it into (train, held-out) index arrays.

    The held-out part has ``round(rows * validation_fraction)`` rows, at least two; the training part at
    least two as well.

    Raises:
        ValueError: the fraction is not strictly between 0 and 1, or leaves either part too small.
    """
    if not 0 < validation_fraction < 1:
        raise ValueError(f"validation_fraction must be between 0 and 1, not {validation_fraction}")
    held_out = max(2, round(rows * validation_fraction))
    if rows - held_out < 2:
        raise ValueError(f"{rows} rows with validation_fraction {validation_fraction} leave too few to train on")
    order = np.random.default_rng(seed).permutation(rows)
    return np.sort(order[held_out:]), np.sort(order[:held_out])


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """RMSE and MAE (in the unit of the inputs) and the coefficient of determination R².

    R² is NaN when every actual value is the same (it is undefined then).
    """
    actual = np.asarray(actual, dtype=np.float64).reshape(-1)
    error = np.asarray(predicted, dtype=np.float64).reshape(-1) - actual
    total = float(np.sum((actual - actual.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else float("nan"),
    }
