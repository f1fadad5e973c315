"""A party's own table: read from its CSV (only in that party's process) and checked.

Bad input is refused with a message for the party's own operator.  Messages that may
travel to another party (a feature party's errors reach the label party) never quote an
identifier or a value: "3 duplicate IDs (first at line 17)", not the ID itself.

* IDs: the ``id_column``, stripped; upper-cased when ``uscc`` is set (a unified social
  credit code is case-insensitive on paper, upper-case in registers).  Empty IDs and
  duplicate IDs are errors.
* Labels (label party): ``0`` or ``1`` (``0.0``/``1.0``, ``true``/``false`` accepted);
  anything else is an error naming the line and the value.
* Feature columns: a column whose every value is a number or missing becomes a float64
  array (NaN = missing) right after reading, which keeps wide numeric tables compact;
  any other column stays a list of strings (categorical).  :mod:`veil.training.encoding`
  accepts both.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from veil.errors import InvalidArgument
from veil.uscc import is_valid_uscc

MAX_COLUMNS = 2048
MISSING_TOKENS = frozenset({"", "na", "nan", "null", "none", "n/a", "#n/a"})
Column = list[str] | npt.NDArray[np.float64]
_LABEL_VALUES = {
    "0": 0,
    "1": 1,
    "0.0": 0,
    "1.0": 1,
    "false": 0,
    "true": 1,
}


@dataclass
class PartyTable:
    """One party's rows: IDs, optional labels, feature columns as raw strings."""

    source: str
    ids: list[str]
    columns: dict[str, Column] = field(default_factory=dict)
    labels: npt.NDArray[np.int8] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: Sequence[int] | npt.NDArray[np.int64]) -> PartyTable:
        """The table restricted to ``rows`` (in that order)."""
        idx = [int(i) for i in rows]
        return PartyTable(
            source=self.source,
            ids=[self.ids[i] for i in idx],
            columns={k: subset(v, idx) for k, v in self.columns.items()},
            labels=None if self.labels is None else self.labels[np.asarray(idx, dtype=np.int64)],
        )


def subset(column: Column, rows: Sequence[int] | npt.NDArray[np.int64]) -> Column:
    """The values of ``rows`` (in that order) of a column of either kind."""
    if isinstance(column, np.ndarray):
        return column[np.asarray(rows, dtype=np.int64)]
    return [column[int(i)] for i in rows]


def as_numbers(raw: Sequence[str]) -> npt.NDArray[np.float64] | None:
    """The column as float64 (NaN for missing), or ``None`` if a value is not a finite number."""
    try:
        out = np.asarray(raw, dtype=np.float64)  # fast path: every value a number literal
    except ValueError:
        out = np.empty(len(raw), dtype=np.float64)
        for i, text in enumerate(raw):
            if text.strip().lower() in MISSING_TOKENS:
                out[i] = np.nan
                continue
            try:
                out[i] = float(text)
            except ValueError:
                return None
    if np.any(np.isinf(out)):
        return None
    return out


def _fail(source: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{source}: {problem}")


def read_party_csv(
    path: str | Path,
    *,
    id_column: str,
    label_column: str | None = None,
    uscc: bool = False,
    source: str | None = None,
) -> PartyTable:
    """Read and check a party's CSV (UTF-8, header row, comma-separated)."""
    path = Path(path)
    name = source or path.name
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise _fail(name, f"cannot open ({exc.strerror})") from None
    with fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise _fail(name, "is empty (no header row)") from None
        except csv.Error as exc:
            raise _fail(name, f"is not valid CSV ({exc})") from None
        header = [h.strip() for h in header]
        if id_column not in header:
            raise _fail(name, f"has no ID column {id_column!r} in its header")
        if label_column is not None and label_column not in header:
            raise _fail(name, f"has no label column {label_column!r} in its header")
        if len(set(header)) != len(header):
            dup = next(h for h in header if header.count(h) > 1)
            raise _fail(name, f"column {dup!r} appears twice in the header")
        if any(not h for h in header):
            raise _fail(name, "has an empty column name in its header")
        if len(header) > MAX_COLUMNS:
            raise _fail(name, f"has more than {MAX_COLUMNS} columns")
        id_at = header.index(id_column)
        label_at = header.index(label_column) if label_column is not None else -1
        feature_at = [(i, h) for i, h in enumerate(header) if i not in (id_at, label_at)]
        ids: list[str] = []
        labels: list[int] = []
        cols: dict[str, list[str]] = {h: [] for _, h in feature_at}
        first_line: dict[str, int] = {}
        duplicates = 0
        first_dup_line = 0
        try:
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) != len(header):
                    raise _fail(
                        name, f"line {line_no} has {len(row)} fields, the header has {len(header)}"
                    )
                ident = row[id_at].strip()
                if uscc:
                    ident = ident.upper()
                if not ident:
                    raise _fail(name, f"line {line_no} has an empty ID")
                if ident in first_line:
                    duplicates += 1
                    first_dup_line = first_dup_line or line_no
                    continue
                first_line[ident] = line_no
                if label_at >= 0:
                    raw = row[label_at].strip().lower()
                    if raw not in _LABEL_VALUES:
                        shown = row[label_at].strip()[:20]
                        raise _fail(
                            name,
                            f"line {line_no}: label {shown!r} in column {label_column!r} is not "
                            "0 or 1 (labels must be binary: 1 = default, 0 = no default)",
                        )
                    labels.append(_LABEL_VALUES[raw])
                ids.append(ident)
                for i, h in feature_at:
                    cols[h].append(row[i])
        except csv.Error as exc:
            raise _fail(name, f"is not valid CSV ({exc})") from None
    if duplicates:
        raise _fail(
            name,
            f"{duplicates} duplicate ID{'s' if duplicates > 1 else ''} in column {id_column!r} "
            f"(first repeated at line {first_dup_line}); each ID must appear once",
        )
    if not ids:
        raise _fail(name, "has no data rows")
    if uscc:
        bad = sum(1 for i in ids if not is_valid_uscc(i))
        if bad:
            raise _fail(name, f"{bad} IDs are not valid unified social credit codes")
    typed: dict[str, Column] = {}
    for h, values in cols.items():
        numbers = as_numbers(values)
        typed[h] = values if numbers is None else numbers
    table = PartyTable(source=name, ids=ids, columns=typed)
    if label_at >= 0:
        arr = np.asarray(labels, dtype=np.int8)
        if arr.min() == arr.max():
            raise _fail(name, f"every label is {int(arr[0])}: training needs both 0 and 1")
        table.labels = arr
    return table
