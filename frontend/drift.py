"""Drift of the prediction log: is what the model sees now what it saw before?

Reads the prediction log (``common.prediction_log``: ``PREDICTION_LOG_DIR/date=YYYY-MM-DD/*.parquet``) within
a budget of rows and bytes, newest files first; splits it into a reference window and a current window; and
tests each column: the class distribution (chi-square and PSI over the top classes plus "other"), confidence
(top-1 probability, margin, entropy) and the four image statistics (Kolmogorov-Smirnov and PSI). The Monitoring
page (``frontend/monitoring_page.py``) and ``python -m frontend.drift`` (an HTML report, for scheduled jobs) show
the same results. Nothing here imports Streamlit.

The statistics are SciPy's (``ks_2samp``, ``chi2_contingency``, Cramér's V, Benjamini-Hochberg). Evidently,
which the issue names, is not used: it pulls in its own pandas/plotly/nltk stack (over 100 MB in the frontend
image) for the same two tests and PSI, and renders reports with JavaScript from a CDN, which the offline report
here must not need.

Verdicts, per column (thresholds below, the usual ones for PSI):

- **drift**: PSI >= 0.2, or the test's p-value (Benjamini-Hochberg adjusted over the columns tested, so that
  testing nine columns does not raise nine chances of a false alarm) under 0.01 *and* an effect at least
  ``MIN_EFFECT`` (the KS distance, or Cramér's V for the classes), so a huge sample does not flag a trivial
  change;
- **watch**: PSI from 0.1 to 0.2;
- **stable**: neither;
- **too few records**: either window has fewer than ``MIN_ROWS`` records; nothing is concluded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.dataset as ds  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from scipy import special, stats  # type: ignore[import-untyped]

from common.prediction_log import IMAGE_STATISTICS, PARTITION, SCHEMA
from frontend.logs import configure_logging

__all__ = [
    "CONTINUOUS",
    "ClassShare",
    "ColumnDrift",
    "DriftReport",
    "LogError",
    "LogRead",
    "Monitoring",
    "Windows",
    "compare",
    "load",
    "main",
    "psi",
    "read_log",
    "split_windows",
]

# --- thresholds
PSI_DRIFT = 0.2
PSI_WATCH = 0.1
P_VALUE = 0.01
MIN_EFFECT = 0.1  # KS distance (the largest gap between the two cumulative distributions), or Cramér's V
MIN_ROWS = 100  # per window, for any verdict
TOP_CLASSES = 10  # the class distribution is compared over these plus "other"
MAX_PSI_BINS = 10  # quantiles of the reference; fewer for small windows (PSI's bias grows with bins / rows)
EMPTY_SHARE = 1e-4  # an empty bin counts as this share, so PSI stays finite
HISTOGRAM_BINS = 30  # the charts' bins (equal width), not the tests'
OTHER = "(other classes)"  # the rest, in one bar (a label of the model could be "other")

# --- read budget defaults (FrontendSettings has the same: MONITORING_MAX_ROWS, MONITORING_MAX_MB)
DEFAULT_MAX_ROWS = 200_000
DEFAULT_MAX_MB = 256
DEFAULT_CURRENT_HOURS = 24.0
DEFAULT_REFERENCE_DAYS = 7.0

CONTINUOUS: tuple[str, ...] = ("probability", "margin", "entropy", *IMAGE_STATISTICS)
READ_COLUMNS: tuple[str, ...] = ("time", "model_version", "label", *CONTINUOUS)
TITLES: dict[str, str] = {
    "label": "class distribution",
    "probability": "confidence",
    "margin": "margin",
    "entropy": "entropy",
    "brightness": "brightness",
    "contrast": "contrast",
    "colourfulness": "colourfulness",
    "sharpness": "sharpness",
}
DESCRIPTIONS: dict[str, str] = {
    "label": "share of each top-1 class (the top classes, the rest as other)",
    "probability": "the top class's probability",
    "margin": "top-1 minus top-2 probability",
    "entropy": "entropy of the probabilities (nats)",
    "brightness": "mean luma of the model's input, 0-255",
    "contrast": "standard deviation of that luma",
    "colourfulness": "Hasler-Süsstrunk colourfulness",
    "sharpness": "variance of the luma's Laplacian",
}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HIVE = ds.partitioning(pa.schema([pa.field(PARTITION, pa.string())]), flavor="hive")

Status = Literal["drift", "watch", "stable", "too few records"]


class LogError(ValueError):
    """The log (or reference) cannot be read at all; the message says what to check or set."""


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class LogRead:
    """What was read from one log or reference: the rows (``READ_COLUMNS``, newest last) and what was left."""

    table: pa.Table
    files_read: int
    files_in_scope: int
    megabytes_read: float
    truncated: bool  # the budget stopped the reading: older records in scope were not read
    skipped: tuple[str, ...] = ()  # files that could not be read: "name: reason"

    @property
    def rows(self) -> int:
        return int(self.table.num_rows)

    def notes(self, what: str) -> list[str]:
        """Sentences about what was not read, and what to do about it (plain text)."""
        notes = []
        if self.truncated:
            notes.append(
                f"The {what} holds more than was read: the newest {self.rows:,} records "
                f"({self.files_read} of {self.files_in_scope} files, {self.megabytes_read:.1f} MB) were read, "
                "older ones were not. Raise MONITORING_MAX_ROWS or MONITORING_MAX_MB, or shorten the windows."
            )
        if self.skipped:
            shown = "; ".join(self.skipped[:3]) + ("; ..." if len(self.skipped) > 3 else "")
            notes.append(
                f"{len(self.skipped)} file(s) of the {what} could not be read and were left out ({shown}). "
                "Files must be Parquet with the prediction log's columns (docs/monitoring.md)."
            )
        return notes


def _empty() -> pa.Table:
    return pa.table({name: pa.array([], SCHEMA.field(name).type) for name in READ_COLUMNS})


def _newest_first(root: Path, days: float | None, what: str) -> tuple[ds.Dataset, list[ds.Fragment]]:
    """The log's Parquet files, newest first (by date partition, then by name: the writer's names start with the
    time), with ``days``: only the partitions within that many days of the newest."""
    if not root.exists():
        raise LogError(f"The {what} {str(root)!r} does not exist. Check the path (on Cloud Run: the volume mount).")
    try:
        dataset = ds.dataset(
            str(root),
            format="parquet",
            partitioning=_HIVE if root.is_dir() else None,
            schema=SCHEMA.append(pa.field(PARTITION, pa.string())) if root.is_dir() else SCHEMA,
        )
        fragments = [f for f in dataset.get_fragments() if f.path.endswith(".parquet")]
    except (OSError, pa.ArrowException) as exc:
        raise LogError(f"The {what} {str(root)!r} cannot be listed: {exc}") from None
    dated = [(_date_of(fragment), fragment) for fragment in fragments]
    newest = max((date for date, _ in dated if date is not None), default=None)
    if days is not None and newest is not None:
        oldest = newest - dt.timedelta(days=math.ceil(days))
        dated = [(date, f) for date, f in dated if date is None or date >= oldest]
    dated.sort(key=lambda pair: (pair[0] or dt.date.min, pair[1].path), reverse=True)
    return dataset, [fragment for _, fragment in dated]


def read_log(
    path: str | Path,
    *,
    days: float | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_mb: float = DEFAULT_MAX_MB,
    what: str = "prediction log",
) -> LogRead:
    """Read ``path`` (a log folder in the Hive layout, a flat folder of Parquet files, or one file), newest files
    first, until ``max_rows`` records or ``max_mb`` megabytes of files; with ``days``, only the date partitions
    within that many days of the newest one (the others are never opened).

    LogError when there is no such folder or file, or nothing in it can be read."""
    root = Path(path)
    dataset, fragments = _newest_first(root, days, what)
    tables: list[pa.Table] = []
    rows = 0
    read_bytes = 0
    files_read = 0
    skipped: list[str] = []
    truncated = False
    budget = int(max_mb * 1024 * 1024)
    for fragment in fragments:
        if rows >= max_rows:
            truncated = True
            break
        name = _relative(fragment.path, root)
        try:
            size = dataset.filesystem.get_file_info(fragment.path).size or 0
            if read_bytes + size > budget:
                truncated = True
                if read_bytes:
                    break
                skipped.append(f"{name}: larger than MONITORING_MAX_MB ({size / 2**20:.1f} MB)")
                continue
            table = fragment.to_table(columns=list(READ_COLUMNS))
        except (OSError, pa.ArrowException) as exc:
            skipped.append(f"{name}: {type(exc).__name__}")
            continue
        read_bytes += size
        files_read += 1
        table = table.filter(pc.is_valid(table["time"]))
        tables.append(table)
        rows += table.num_rows
    if not tables and skipped:
        raise LogError(
            f"No file of the {what} {str(root)!r} could be read ({'; '.join(skipped[:3])}). "
            "Files must be Parquet with the prediction log's columns (docs/monitoring.md)."
        )
    table = pa.concat_tables(tables) if tables else _empty()
    table = table.sort_by("time")
    if table.num_rows > max_rows:
        table = table.slice(table.num_rows - max_rows)
        truncated = True
    return LogRead(table, files_read, len(fragments), read_bytes / 2**20, truncated, tuple(skipped))


def _date_of(fragment: ds.Fragment) -> dt.date | None:
    value = ds.get_partition_keys(fragment.partition_expression).get(PARTITION)
    if isinstance(value, str) and _DATE.match(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            return None
    return None


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name


# ---------------------------------------------------------------- windows


@dataclass(frozen=True)
class Windows:
    reference: pa.Table
    current: pa.Table
    reference_text: str  # "the 7 days before the current window (2026-11-23 10:00 to 2026-11-30 10:00 UTC)"
    current_text: str


def _when(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M")


def _span(table: pa.Table) -> str:
    if table.num_rows == 0:
        return "no records"
    low, high = pc.min_max(table["time"]).values()
    return f"{_when(low.as_py())} to {_when(high.as_py())} UTC"


def _between(table: pa.Table, after: dt.datetime, upto: dt.datetime) -> pa.Table:
    """The rows with ``after < time <= upto``."""
    times = table["time"]
    low, high = pa.scalar(after, times.type), pa.scalar(upto, times.type)
    return table.filter(pc.and_(pc.greater(times, low), pc.less_equal(times, high)))


def split_windows(
    log: pa.Table,
    *,
    current_hours: float = DEFAULT_CURRENT_HOURS,
    reference_days: float = DEFAULT_REFERENCE_DAYS,
    reference: pa.Table | None = None,
    end: dt.datetime | None = None,
) -> Windows:
    """The current window: the last ``current_hours`` before ``end`` (default: the newest record, so that an idle
    or old log still has one). The reference: ``reference`` when given (a reference set), else the
    ``reference_days`` before the current window."""
    hours = "24 hours" if current_hours == 24 else f"{current_hours:g} hours"
    if log.num_rows == 0:
        empty = log.slice(0, 0)
        current_text = f"the last {hours} of the log (no records)"
        if reference is not None:
            return Windows(reference, empty, f"the reference set ({_span(reference)})", current_text)
        return Windows(empty, empty, "the days before the current window (no records)", current_text)
    end = end or pc.max(log["time"]).as_py()
    start = end - dt.timedelta(hours=current_hours)
    current = _between(log, start, end)
    current_text = f"the last {hours} of the log ({_span(current)})"
    if reference is not None:
        return Windows(reference, current, f"the reference set ({_span(reference)})", current_text)
    ref = _between(log, start - dt.timedelta(days=reference_days), start)
    days = f"{reference_days:g} day" + ("" if reference_days == 1 else "s")
    return Windows(ref, current, f"the {days} before the current window ({_span(ref)})", current_text)


# ---------------------------------------------------------------- statistics


def psi(reference_counts: Sequence[float] | np.ndarray, current_counts: Sequence[float] | np.ndarray) -> float:
    """Population stability index of two histograms over the same bins: sum((c - r) * ln(c / r)) of their shares.

    SciPy has no PSI as such; it is the symmetric Kullback-Leibler divergence, so SciPy's ``rel_entr`` gives its
    terms. Empty bins count as ``EMPTY_SHARE`` so it stays finite (the usual practice)."""
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    ref = np.maximum(ref / max(ref.sum(), 1.0), EMPTY_SHARE)
    cur = np.maximum(cur / max(cur.sum(), 1.0), EMPTY_SHARE)
    return float(np.sum(special.rel_entr(cur, ref) + special.rel_entr(ref, cur)))


@dataclass(frozen=True)
class ClassShare:
    label: str  # from the model's files: hostile, shown escaped
    reference_count: int
    current_count: int
    reference_share: float
    current_share: float


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    status: Status
    test: str  # "KS" or "chi-square"
    reference_rows: int
    current_rows: int
    psi: float | None = None
    statistic: float | None = None  # KS distance, or chi-square
    effect: float | None = None  # KS distance, or Cramér's V
    p_value: float | None = None  # adjusted (Benjamini-Hochberg over the columns tested)
    reference_median: float | None = None
    current_median: float | None = None
    # the charts': equal-width bin edges, and each window's share per bin
    edges: tuple[float, ...] = ()
    reference_hist: tuple[float, ...] = ()
    current_hist: tuple[float, ...] = ()
    classes: tuple[ClassShare, ...] = ()

    @property
    def title(self) -> str:
        return TITLES.get(self.column, self.column)

    @property
    def reason(self) -> str:
        """Why the verdict, in a few words (plain text, no label in it)."""
        if self.status == "too few records":
            return (
                f"reference {self.reference_rows:,} and current {self.current_rows:,} records; "
                f"at least {MIN_ROWS} each needed"
            )
        parts = []
        if self.psi is not None:
            parts.append(f"PSI {self.psi:.3f}")
        if self.p_value is not None and self.effect is not None:
            effect = "distance" if self.test == "KS" else "Cramér's V"
            parts.append(f"{self.test} p {_p(self.p_value)}, {effect} {self.effect:.3f}")
        if self.reference_median is not None and self.current_median is not None:
            parts.append(f"median {self.reference_median:.3g} → {self.current_median:.3g}")
        return "; ".join(parts)


def _p(value: float) -> str:
    return "< 1e-300" if value == 0 else f"{value:.2g}"


@dataclass(frozen=True)
class DriftReport:
    columns: tuple[ColumnDrift, ...]
    reference_rows: int
    current_rows: int

    @property
    def drift(self) -> bool:
        return any(c.status == "drift" for c in self.columns)

    def named(self, status: Status) -> list[str]:
        return [c.title for c in self.columns if c.status == status]

    @property
    def summary(self) -> str:
        """One sentence: "Drift in brightness and class distribution; watch contrast." (plain text)."""
        if any(c.status == "too few records" for c in self.columns):
            return (
                f"Not enough records to test: the reference window has {self.reference_rows:,} and the current "
                f"{self.current_rows:,}; at least {MIN_ROWS} each are needed."
            )
        drifted, watched = self.named("drift"), self.named("watch")
        if drifted:
            text = f"Drift in {_and(drifted)}"
            return text + (f"; watch {_and(watched)}." if watched else ".")
        if watched:
            return f"No drift; watch {_and(watched)}."
        return f"No drift: all {len(self.columns)} columns stable."


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _floats(table: pa.Table, column: str) -> np.ndarray:
    values: np.ndarray = table[column].to_numpy(zero_copy_only=False).astype(np.float64)
    finite: np.ndarray = values[np.isfinite(values)]
    return finite


def _class_shares(reference: pa.Table, current: pa.Table) -> tuple[ClassShare, ...]:
    ref = _counts(reference)
    cur = _counts(current)
    ref_total = max(reference.num_rows, 1)
    cur_total = max(current.num_rows, 1)
    # ranked by the sum of the two shares, so a class common in one window only is among them
    combined = {
        label: ref.get(label, 0) / ref_total + cur.get(label, 0) / cur_total for label in ref.keys() | cur.keys()
    }
    top = sorted(combined, key=lambda label: (-combined[label], label))[:TOP_CLASSES]
    rows = [(label, ref.get(label, 0), cur.get(label, 0)) for label in top]
    if len(combined) > len(top):
        rest = set(combined) - set(top)
        rows.append((OTHER, sum(ref.get(x, 0) for x in rest), sum(cur.get(x, 0) for x in rest)))
    return tuple(ClassShare(label, r, c, r / ref_total, c / cur_total) for label, r, c in rows)


def _counts(table: pa.Table) -> dict[str, int]:
    if table.num_rows == 0:
        return {}
    counted = pc.value_counts(table["label"].drop_null())
    return {row["values"]: int(row["counts"]) for row in counted.to_pylist()}


def _histogram(ref: np.ndarray, cur: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    both = np.concatenate([ref, cur])
    low, high = np.quantile(both, [0.005, 0.995])
    if not high > low:
        low, high = float(both.min()), float(both.max()) + 1e-9
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    shares = []
    for values in (ref, cur):
        counts, _ = np.histogram(np.clip(values, low, high), bins=edges)
        shares.append(tuple(float(x) for x in counts / max(len(values), 1)))
    return tuple(float(x) for x in edges), shares[0], shares[1]


def _psi_continuous(ref: np.ndarray, cur: np.ndarray) -> float:
    bins = min(MAX_PSI_BINS, max(3, min(len(ref), len(cur)) // 30))
    inner = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], inner, [np.inf]])
    return psi(np.histogram(ref, bins=edges)[0], np.histogram(cur, bins=edges)[0])


def _status(value: float, p: float, effect: float) -> Status:
    if value >= PSI_DRIFT or (p < P_VALUE and effect >= MIN_EFFECT):
        return "drift"
    return "watch" if value >= PSI_WATCH else "stable"


def _class_test(column: ColumnDrift) -> ColumnDrift:
    """Chi-square and Cramér's V (SciPy) and PSI over the class table; the p-value not yet adjusted."""
    counts = np.array([[c.reference_count for c in column.classes], [c.current_count for c in column.classes]])
    counts = counts[:, counts.sum(axis=0) > 0]
    if counts.shape[1] < 2:  # one class in both windows: nothing to test
        return replace(column, psi=0.0, statistic=0.0, effect=0.0, p_value=1.0)
    chi2 = stats.chi2_contingency(counts, correction=False)
    effect = float(stats.contingency.association(counts, method="cramer", correction=False))
    return replace(
        column,
        psi=psi(counts[0], counts[1]),
        statistic=float(chi2.statistic),
        effect=effect,
        p_value=float(chi2.pvalue),
    )


def _continuous_test(column: ColumnDrift, ref: np.ndarray, cur: np.ndarray) -> ColumnDrift:
    """KS (SciPy) and PSI over the reference's quantiles; the p-value not yet adjusted."""
    ks = stats.ks_2samp(ref, cur)
    return replace(
        column,
        psi=_psi_continuous(ref, cur),
        statistic=float(ks.statistic),
        effect=float(ks.statistic),
        p_value=float(ks.pvalue),
        reference_median=float(np.median(ref)),
        current_median=float(np.median(cur)),
    )


def compare(reference: pa.Table, current: pa.Table) -> DriftReport:
    """Each column's verdict, reference against current (tables with ``READ_COLUMNS``)."""
    n_ref, n_cur = reference.num_rows, current.num_rows
    enough = min(n_ref, n_cur) >= MIN_ROWS
    label = ColumnDrift(
        "label", "too few records", "chi-square", n_ref, n_cur, classes=_class_shares(reference, current)
    )
    columns = [_class_test(label) if enough else label]
    for name in CONTINUOUS:
        ref, cur = _floats(reference, name), _floats(current, name)
        column = ColumnDrift(name, "too few records", "KS", len(ref), len(cur))
        if len(ref) and len(cur):
            edges, ref_hist, cur_hist = _histogram(ref, cur)
            column = replace(column, edges=edges, reference_hist=ref_hist, current_hist=cur_hist)
        columns.append(_continuous_test(column, ref, cur) if enough and min(len(ref), len(cur)) >= MIN_ROWS else column)
    # One Benjamini-Hochberg adjustment over the p-values of all the columns tested, then the verdicts.
    tested = [i for i, column in enumerate(columns) if column.p_value is not None]
    if tested:
        adjusted = stats.false_discovery_control([columns[i].p_value for i in tested], method="bh")
        for i, p in zip(tested, adjusted, strict=True):
            c = columns[i]
            columns[i] = replace(c, p_value=float(p), status=_status(c.psi or 0.0, float(p), c.effect or 0.0))
    return DriftReport(tuple(columns), n_ref, n_cur)


# ---------------------------------------------------------------- daily series


def daily(windows: Windows) -> list[dict[str, object]]:
    """One row per UTC day and window: records, and the mean of each continuous column (for the time series)."""
    rows: list[dict[str, object]] = []
    for name, table in (("reference", windows.reference), ("current", windows.current)):
        if table.num_rows == 0:
            continue
        days = pc.strftime(table["time"], format="%Y-%m-%d")
        grouped = (
            table.select(list(CONTINUOUS))
            .append_column("day", days)
            .group_by("day")
            .aggregate([("day", "count"), *((column, "mean") for column in CONTINUOUS)])
        )
        for row in grouped.to_pylist():
            rows.append(
                {
                    "window": name,
                    "day": row["day"],
                    "records": row["day_count"],
                    **{column: row[f"{column}_mean"] for column in CONTINUOUS},
                }
            )
    rows.sort(key=lambda row: (str(row["day"]), str(row["window"])))
    return rows


# ---------------------------------------------------------------- everything the page and the report show


@dataclass(frozen=True)
class Monitoring:
    report: DriftReport
    windows: Windows
    daily: list[dict[str, object]]
    notes: list[str] = field(default_factory=list)  # what was not read, and what to do (plain text)
    versions: tuple[str, ...] = ()  # model versions in the current window (from the log: hostile)


def load(
    log_dir: str | Path,
    *,
    reference: str | Path | None = None,
    current_hours: float = DEFAULT_CURRENT_HOURS,
    reference_days: float = DEFAULT_REFERENCE_DAYS,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_mb: float = DEFAULT_MAX_MB,
    whole_current: bool = False,
) -> Monitoring:
    """Read the log (and the reference set, if any), split it into windows, and compare them.

    ``whole_current``: every record read from ``log_dir`` is the current window (the CLI's CURRENT set).
    LogError when the log or the reference cannot be read, or the log holds no record."""
    reference_read = None
    if reference is not None:
        reference_read = read_log(reference, max_rows=max_rows, max_mb=max_mb, what="reference set")
        if reference_read.rows == 0:
            raise LogError(f"The reference set {str(reference)!r} holds no records.")
        days: float | None = current_hours / 24
    else:
        days = current_hours / 24 + reference_days
    log = read_log(log_dir, days=None if whole_current else days, max_rows=max_rows, max_mb=max_mb)
    if log.rows == 0:
        raise LogError(
            f"The prediction log {str(log_dir)!r} holds no records yet. The backend writes them when "
            "PREDICTION_LOG_DIR is set there too (docs/monitoring.md)."
        )
    ref_table = reference_read.table if reference_read is not None else None
    if whole_current:
        windows = Windows(
            ref_table if ref_table is not None else log.table.slice(0, 0),
            log.table,
            f"the reference set ({_span(ref_table)})" if ref_table is not None else "none",
            f"the current set ({_span(log.table)})",
        )
    else:
        windows = split_windows(
            log.table, current_hours=current_hours, reference_days=reference_days, reference=ref_table
        )
    notes = log.notes("prediction log") + (reference_read.notes("reference set") if reference_read else [])
    versions = tuple(sorted({str(v) for v in windows.current["model_version"].drop_null().unique().to_pylist()}))
    return Monitoring(compare(windows.reference, windows.current), windows, daily(windows), notes, versions)


# ---------------------------------------------------------------- command line


def write_reference(
    log_dir: str | Path,
    out: str | Path,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    max_rows: int,
    max_mb: float,
) -> int:
    """The log's records from ``since`` to ``until`` (all columns, per SCHEMA) as one Parquet file; how many."""
    root = Path(log_dir)
    if not root.is_dir():
        raise LogError(f"--from {str(root)!r} is not a folder. Give the prediction log's folder.")
    dataset = ds.dataset(
        str(root), format="parquet", partitioning=_HIVE, schema=SCHEMA.append(pa.field(PARTITION, pa.string()))
    )
    condition = pc.is_valid(pc.field("time"))
    if since is not None:
        condition = condition & (pc.field("time") >= pa.scalar(since, SCHEMA.field("time").type))
        condition = condition & (pc.field(PARTITION) >= since.strftime("%Y-%m-%d"))
    if until is not None:
        condition = condition & (pc.field("time") < pa.scalar(until, SCHEMA.field("time").type))
        condition = condition & (pc.field(PARTITION) <= until.strftime("%Y-%m-%d"))
    try:
        scanner = dataset.scanner(columns=SCHEMA.names, filter=condition)
        batches = []
        rows = 0
        for batch in scanner.to_batches():
            batches.append(batch)
            rows += batch.num_rows
            if rows > max_rows or sum(b.nbytes for b in batches) > max_mb * 2**20:
                raise LogError(
                    f"More than {max_rows:,} records or {max_mb:g} MB in that span: shorten it (--since/--until) "
                    "or raise --max-rows/--max-mb."
                )
        table = pa.Table.from_batches(batches, schema=SCHEMA).sort_by("time")
    except (OSError, pa.ArrowException) as exc:
        raise LogError(f"The prediction log {str(root)!r} could not be read: {exc}") from None
    if table.num_rows == 0:
        raise LogError("No records in that span: check --since/--until (UTC) against the log's dates.")
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    pq.write_table(table, partial, compression="zstd")
    partial.replace(target)
    return int(table.num_rows)


def _moment(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date or time such as 2026-11-30 or 2026-11-30T12:00"
        ) from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def _report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m frontend.drift",
        description=(
            "Compare the prediction log's CURRENT records with a REFERENCE and write an HTML report. With CURRENT "
            "alone (or the same folder twice), its last --hours against the --reference-days before. "
            "Exit status: 0 no drift, 1 drift found (a scheduled job fails, so its alert fires), 2 usage or input "
            "error. To make a reference set: python -m frontend.drift reference OUT --from LOG --since ... --until ..."
        ),
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="[REFERENCE] CURRENT",
        help="a reference set (Parquet file or folder), then the prediction log's folder (or a Parquet file or folder)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("drift-report.html"), help="the HTML report (default: %(default)s)"
    )
    parser.add_argument(
        "--hours",
        type=float,
        default=DEFAULT_CURRENT_HOURS,
        help="the current window: the last HOURS of CURRENT (default %(default)g; 0: all of CURRENT)",
    )
    parser.add_argument(
        "--reference-days",
        type=float,
        default=DEFAULT_REFERENCE_DAYS,
        help="when REFERENCE is CURRENT itself: the DAYS before the current window (default %(default)g)",
    )
    parser.add_argument(
        "--max-rows", type=int, default=DEFAULT_MAX_ROWS, help="records read per set (default %(default)d)"
    )
    parser.add_argument(
        "--max-mb", type=float, default=DEFAULT_MAX_MB, help="megabytes of files read per set (default %(default)g)"
    )
    return parser


def _reference_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m frontend.drift reference",
        description=(
            "Cut a reference set out of the prediction log: its records from --since to --until, as one Parquet file."
        ),
    )
    parser.add_argument("out", metavar="OUT", type=Path, help="the Parquet file to write")
    parser.add_argument("--from", dest="log", required=True, help="the prediction log's folder")
    parser.add_argument("--since", type=_moment, help="first moment included (UTC unless it says otherwise)")
    parser.add_argument("--until", type=_moment, help="first moment excluded")
    parser.add_argument("--max-rows", type=int, default=1_000_000, help="most records (default %(default)d)")
    parser.add_argument("--max-mb", type=float, default=1024, help="most megabytes in memory (default %(default)g)")
    return parser


_logger = logging.getLogger("frontend.drift")


def _reference_command(args: Sequence[str]) -> int:
    options = _reference_parser().parse_args(args)
    if options.since and options.until and options.since >= options.until:
        raise LogError("--since must be before --until.")
    count = write_reference(
        options.log,
        options.out,
        since=options.since,
        until=options.until,
        max_rows=options.max_rows,
        max_mb=options.max_mb,
    )
    _logger.info("reference set written", extra={"path": str(options.out), "records": count})
    return 0


def _report_command(args: Sequence[str]) -> int:
    options = _report_parser().parse_args(args)
    if options.hours < 0 or options.reference_days <= 0 or options.max_rows < 1 or options.max_mb <= 0:
        raise LogError("--hours must be 0 or more; --reference-days, --max-rows and --max-mb more than 0.")
    if len(options.paths) > 2:
        raise LogError("Give at most two sets: [REFERENCE] CURRENT.")
    reference, current = options.paths if len(options.paths) == 2 else (options.paths[0], options.paths[0])
    same = Path(reference).resolve() == Path(current).resolve()
    monitoring = load(
        current,
        reference=None if same else reference,
        current_hours=options.hours or DEFAULT_CURRENT_HOURS,
        reference_days=options.reference_days,
        max_rows=options.max_rows,
        max_mb=options.max_mb,
        whole_current=options.hours == 0 and not same,
    )
    from frontend.drift_report import html_report  # here: it imports this module

    target: Path = options.out
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(html_report(monitoring), encoding="utf-8")
    except OSError as exc:
        raise LogError(f"cannot write the report to {str(target)!r}: {exc.strerror or exc}") from None
    report = monitoring.report
    for note in monitoring.notes:
        _logger.warning(note)
    _logger.info(
        report.summary,
        extra={
            "report": str(target),
            "drift": report.drift,
            "drifted": report.named("drift"),
            "watch": report.named("watch"),
            "reference_records": report.reference_rows,
            "current_records": report.current_rows,
        },
    )
    return 1 if report.drift else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m frontend.drift``: 0 no drift, 1 drift found, 2 usage or input error (a JSON error line)."""
    configure_logging("INFO")
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["reference"]:
            return _reference_command(args[1:])
        return _report_command(args)
    except LogError as exc:
        _logger.error(str(exc))
        return 2
    except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
