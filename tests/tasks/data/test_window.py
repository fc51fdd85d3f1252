"""The nightly's training window and holdout (plain function, no Prefect run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tasks.data.demo import generate_demo
from tasks.data.sources import build_window


def test_a_repeated_row_is_never_both_trained_on_and_judged(tmp_path: Path) -> None:
    """A feed that repeats rows (and has a blank label, so labels read as floats) leaks nothing into the holdout."""
    night = generate_demo(1_000, seed=1, day=1)
    newest = pd.concat([night, night.iloc[:300]], ignore_index=True)
    newest["churned"] = newest["churned"].astype(float)
    newest.loc[5, "churned"] = np.nan
    window_path, holdout_path, fp = build_window([generate_demo(500, seed=2)], newest, "churned", 0.3, 7, tmp_path)
    window, holdout = pd.read_parquet(window_path), pd.read_parquet(holdout_path)
    features = [c for c in night.columns if c != "churned"]
    assert window["churned"].notna().all() and len(window) > 1_000
    assert 200 < len(holdout) < 0.3 * len(newest)  # the repeated rows that landed in both sides were dropped
    assert holdout.merge(window[features], on=features).empty
    again = build_window([generate_demo(500, seed=2)], newest, "churned", 0.3, 7, tmp_path / "again")
    assert again[2] == fp  # the same night, the same window
