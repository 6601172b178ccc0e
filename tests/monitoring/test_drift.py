"""frontend.drift: reading the prediction log within its budget, the windows, and the drift tests on synthetic logs
(tests/monitoring/synthetic_log.py) with drift injected, and without."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from scipy import stats  # type: ignore[import-untyped]

from common.prediction_log import SCHEMA
from frontend import drift
from tests.monitoring.synthetic_log import END, Drift, records, write_log


def statuses(monitoring: drift.Monitoring) -> dict[str, str]:
    return {c.column: c.status for c in monitoring.report.columns}


def flagged(monitoring: drift.Monitoring) -> set[str]:
    return {c.column for c in monitoring.report.columns if c.status == "drift"}


# --- the statistics


def test_psi_is_zero_for_equal_histograms_and_grows_with_the_shift() -> None:
    assert drift.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    small = drift.psi([25, 25, 25, 25], [22, 25, 25, 28])
    large = drift.psi([25, 25, 25, 25], [5, 15, 30, 50])
    assert 0 < small < drift.PSI_WATCH < drift.PSI_DRIFT < large
    # the textbook formula, term by term
    r, c = np.array([0.25] * 4), np.array([0.05, 0.15, 0.30, 0.50])
    assert large == pytest.approx(float(np.sum((c - r) * np.log(c / r))))
    assert np.isfinite(drift.psi([10, 0], [0, 10]))  # empty bins count as a small share


@pytest.mark.parametrize(
    ("injected", "expected"),
    [
        (Drift(brightness=-35), {"brightness"}),  # darker photos
        (Drift(class_mix=True), {"label"}),  # another mix of classes
        (Drift(confidence=True), {"probability", "margin", "entropy"}),  # a less confident model
    ],
)
def test_injected_drift_is_flagged_in_its_columns_only(tmp_path: Path, injected: Drift, expected: set[str]) -> None:
    for seed in range(3):
        monitoring = drift.load(write_log(tmp_path / f"{seed}", seed=seed, drift=injected))
        assert flagged(monitoring) == expected, (seed, monitoring.report.summary)
        assert monitoring.report.drift
        assert monitoring.report.summary.startswith("Drift in ")


def test_the_summary_names_the_drifted_columns(tmp_path: Path) -> None:
    monitoring = drift.load(write_log(tmp_path, seed=4, drift=Drift(brightness=-40, class_mix=True)))
    assert monitoring.report.summary == "Drift in class distribution and brightness."


def test_a_log_drawn_from_one_distribution_is_not_flagged(tmp_path: Path) -> None:
    """No drift injected: over 20 seeds (160 column verdicts), no drift at all, and watch at most once."""
    watched = 0
    for seed in range(20):
        monitoring = drift.load(write_log(tmp_path / f"{seed}", seed=seed, days=8, per_day=300))
        assert not flagged(monitoring), (seed, monitoring.report.summary)
        assert monitoring.report.current_rows > drift.MIN_ROWS
        watched += sum(status == "watch" for status in statuses(monitoring).values())
    assert watched <= 1


def test_a_trivial_change_in_a_huge_sample_is_not_drift() -> None:
    """200,000 records a window and brightness 1 level darker: KS's p-value is tiny, its distance is not."""
    rng = np.random.default_rng(7)
    reference = records(rng, [END - dt.timedelta(days=2)] * 200_000)
    current = records(rng, [END] * 200_000, Drift(brightness=-1.0))
    brightness = {c.column: c for c in drift.compare(reference, current).columns}["brightness"]
    assert brightness.p_value is not None
    assert brightness.p_value < drift.P_VALUE
    assert brightness.effect is not None
    assert brightness.effect < drift.MIN_EFFECT
    assert brightness.status == "stable"


def test_ks_and_chi_square_are_scipys(tmp_path: Path) -> None:
    monitoring = drift.load(write_log(tmp_path, seed=2, drift=Drift(brightness=-20)))
    windows = monitoring.windows
    by_column = {c.column: c for c in monitoring.report.columns}
    ks = stats.ks_2samp(
        windows.reference["brightness"].to_numpy().astype(float), windows.current["brightness"].to_numpy().astype(float)
    )
    assert by_column["brightness"].statistic == pytest.approx(ks.statistic)
    shares = by_column["label"].classes
    assert len(shares) == drift.TOP_CLASSES + 1
    assert shares[-1].label == drift.OTHER
    assert sum(s.reference_count for s in shares) == windows.reference.num_rows
    assert sum(s.current_count for s in shares) == windows.current.num_rows
    table = np.array([[s.reference_count for s in shares], [s.current_count for s in shares]])
    assert by_column["label"].statistic == pytest.approx(stats.chi2_contingency(table, correction=False).statistic)


def test_too_few_records_concludes_nothing(tmp_path: Path) -> None:
    monitoring = drift.load(write_log(tmp_path, seed=1, days=2, per_day=60, drift=Drift(brightness=-80)))
    assert set(statuses(monitoring).values()) == {"too few records"}
    assert not monitoring.report.drift
    assert monitoring.report.summary.startswith("Not enough records to test")


# --- windows and references


def test_windows_are_the_last_day_and_the_week_before(tmp_path: Path) -> None:
    monitoring = drift.load(write_log(tmp_path, seed=0, days=10, per_day=100))
    current, reference = monitoring.windows.current, monitoring.windows.reference
    assert current["time"].to_pylist()[-1] == END
    assert min(current["time"].to_pylist()) > END - dt.timedelta(hours=24)
    assert max(reference["time"].to_pylist()) <= END - dt.timedelta(hours=24)
    assert min(reference["time"].to_pylist()) > END - dt.timedelta(days=8)
    assert "7 days before" in monitoring.windows.reference_text
    days = {row["day"] for row in monitoring.daily}
    assert "2026-11-30" in days
    assert len(days) >= 8


def test_a_reference_set_cut_from_the_log_by_the_command(tmp_path: Path) -> None:
    log = write_log(tmp_path / "log", seed=3, days=8, per_day=200, drift=Drift(brightness=-35))
    out = tmp_path / "ref" / "reference.parquet"
    code = drift.main(["reference", str(out), "--from", str(log), "--since", "2026-11-23", "--until", "2026-11-29"])
    assert code == 0
    reference = pq.read_table(out)
    assert reference.schema.equals(SCHEMA, check_metadata=False)
    times = reference["time"].to_pylist()
    assert min(times) >= dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
    assert max(times) < dt.datetime(2026, 11, 29, tzinfo=dt.UTC)
    monitoring = drift.load(log, reference=out)
    assert monitoring.windows.reference.num_rows == reference.num_rows
    assert flagged(monitoring) == {"brightness"}
    assert monitoring.windows.reference_text.startswith("the reference set")
    # an empty span says so
    empty = drift.main(
        ["reference", str(tmp_path / "x.parquet"), "--from", str(log), "--since", "2020-01-01", "--until", "2020-01-02"]
    )
    assert empty == 2


# --- reading: budgets, hostile and broken files


def test_reading_is_bounded_newest_first_and_says_so(tmp_path: Path) -> None:
    log = write_log(tmp_path, seed=0, days=8, per_day=300)
    everything = drift.read_log(log)
    assert everything.rows == 8 * 300
    assert not everything.truncated
    assert not everything.notes("log")
    bounded = drift.read_log(log, max_rows=500)
    assert bounded.rows == 500
    assert bounded.truncated
    assert bounded.table["time"].to_pylist()[-1] == END  # the newest kept
    assert bounded.files_read < bounded.files_in_scope
    (note,) = bounded.notes("prediction log")
    assert "holds more than was read" in note
    assert "MONITORING_MAX_ROWS" in note
    by_bytes = drift.read_log(log, max_mb=0.03)
    assert by_bytes.truncated
    assert 0 < by_bytes.files_read < 9
    # days: only the partitions within that many days of the newest are opened
    recent = drift.read_log(log, days=1)
    assert recent.files_in_scope == 2


def test_broken_files_are_left_out_and_named(tmp_path: Path) -> None:
    log = write_log(tmp_path, seed=0, days=8, per_day=200)
    day = log / "date=2026-11-30"
    (day / "zz-truncated.parquet").write_bytes(b"PAR1 not really")
    wrong = pa.table({"time": pa.array(["yesterday"]), "label": pa.array([1])})
    pq.write_table(wrong, day / "zz-wrong-types.parquet")
    (day / ".tmp-being-written").write_bytes(b"half")  # the writer's temporary names are never read
    (day / "notes.txt").write_text("not a log file")
    read = drift.read_log(log)
    assert read.rows == 8 * 200
    assert sorted(s.split(":")[0] for s in read.skipped) == [
        "date=2026-11-30/zz-truncated.parquet",
        "date=2026-11-30/zz-wrong-types.parquet",
    ]
    assert any("could not be read" in note for note in read.notes("prediction log"))
    monitoring = drift.load(log)
    assert any("could not be read" in note for note in monitoring.notes)


def test_missing_empty_and_unreadable_logs_raise_a_message(tmp_path: Path) -> None:
    with pytest.raises(drift.LogError, match="does not exist"):
        drift.load(tmp_path / "nothing-here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(drift.LogError, match="holds no records yet"):
        drift.load(tmp_path / "empty")
    (tmp_path / "junk" / "date=2026-11-30").mkdir(parents=True)
    (tmp_path / "junk" / "date=2026-11-30" / "a.parquet").write_bytes(b"junk")
    with pytest.raises(drift.LogError, match="No file of the prediction log"):
        drift.load(tmp_path / "junk")


def test_a_flat_folder_or_one_file_reads_as_well(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    table = records(rng, [END - dt.timedelta(minutes=i) for i in range(300)])
    pq.write_table(table, tmp_path / "one.parquet")
    assert drift.read_log(tmp_path / "one.parquet").rows == 300
    assert drift.read_log(tmp_path).rows == 300
