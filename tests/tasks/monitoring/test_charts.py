"""The demo week's picture (tasks.monitoring.charts) on made-up nights: a PNG of a fixed size, whatever is missing."""

from __future__ import annotations

import struct
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

from tasks.monitoring.charts import DPI, SIZE_INCHES, Band, ModelWeek, NightPoint, week_chart, week_figure

DAYS = [date(2026, 1, 1) + timedelta(days=d) for d in range(7)]


def _png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk comes first)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR", head
    return struct.unpack(">II", head[16:24])


def _legend(fig: object, row: int) -> list[str]:
    return [t.get_text() for t in fig.axes[2 * row].get_legend().get_texts()]  # type: ignore[attr-defined]


def test_a_week_with_every_series_is_one_png_of_the_fixed_size(tmp_path: Path) -> None:
    late = ModelWeek("late-labels", "roc_auc", [
        NightPoint(DAYS[0], "no-labels"), NightPoint(DAYS[1], "no-labels"), NightPoint(DAYS[2], "no-labels"),
        NightPoint(DAYS[3], "promoted", None, 0.77, None, "1"), NightPoint(DAYS[4], "refused", 0.0, 0.36, 0.37, "2"),
        NightPoint(DAYS[5], "promoted", 0.1, 0.68, 0.39, "3"), NightPoint(DAYS[6], "no-retrain", 0.44)],
        realized={DAYS[2]: 0.77, DAYS[3]: 0.37, DAYS[4]: 0.39}, realized_label="realized (labels 2 days later)",
        estimated={d: Band(0.80, 0.79, 0.81) for d in DAYS[4:]} | {DAYS[0] - timedelta(days=1): Band(0.5, 0.4, 0.6)})
    inline = ModelWeek("inline-labels", "roc_auc", [
        NightPoint(DAYS[0], "no-labels"), NightPoint(DAYS[1], "promoted", None, 0.77, None, "1"),
        NightPoint(DAYS[2], "no-data"), NightPoint(DAYS[3], "no-retrain", 0.0),
        NightPoint(DAYS[4], "refused", 0.62, 0.55, 0.55, "2"), NightPoint(DAYS[5], "promoted", 0.62, 0.69, 0.55, "3"),
        NightPoint(DAYS[6])], realized={DAYS[3]: 0.77, DAYS[4]: 0.55, DAYS[5]: 0.55})
    path = week_chart([late, inline], tmp_path / "reports" / "week.png", "a week")
    assert path == tmp_path / "reports" / "week.png"
    assert _png_size(path) == (int(SIZE_INCHES[0] * DPI), int(SIZE_INCHES[1] * DPI))
    fig = week_figure([late, inline])
    assert any("estimated before" in t for t in _legend(fig, 0))
    assert {"no data", "run failed"} <= set(_legend(fig, 1)), _legend(fig, 1)
    assert any(t.startswith("challenger promoted") for t in _legend(fig, 1))


def test_missing_series_nights_without_data_and_no_models_still_draw(tmp_path: Path) -> None:
    """No realized series (the gate's champion stands in, and the legend says so), no estimate, nothing at all."""
    gated_only = ModelWeek("gated-only", "accuracy", [
        NightPoint(DAYS[0], "promoted", None, 0.9, None, "1"), NightPoint(DAYS[1], "refused", 0.2, 0.88, 0.91),
        NightPoint(DAYS[2], "no-data"), NightPoint(DAYS[3])])
    nothing = ModelWeek("nothing", "roc_auc", [NightPoint(d, "no-data") for d in DAYS[:3]])
    fig = week_figure([gated_only, nothing], "gaps")
    assert any("gate's holdout" in t and "no realized series" in t for t in _legend(fig, 0)), _legend(fig, 0)
    assert not any("estimated" in t for t in _legend(fig, 0))
    for weeks in ([gated_only, nothing], [nothing], []):
        path = week_chart(weeks, tmp_path / f"week-{len(weeks)}.png")
        assert _png_size(path) == (1440, 840)


def test_importing_the_chart_module_does_not_load_matplotlib() -> None:
    code = "import sys, tasks.monitoring.charts; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"
