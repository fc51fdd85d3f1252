"""The regression demo world: daily demand rows, their late labels, determinism and the drift switch."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.data.demand import (
    CATEGORIES,
    DEMAND_COLUMNS,
    DEMAND_ID,
    DEMAND_LABEL,
    DEMAND_TIME,
    demand_day,
    demand_days,
    drifted_on,
    write_demand_world,
)

START = date(2026, 1, 1)


def test_a_day_has_one_row_per_store_and_product() -> None:
    frame = demand_day(START, 720, seed=1)
    assert list(frame.columns) == [*DEMAND_COLUMNS, DEMAND_LABEL]
    assert len(frame) == 720 and frame[DEMAND_ID].is_unique
    assert not frame.duplicated(["store", "product"]).any()
    assert frame["store"].nunique() == 12 and frame["region"].nunique() == 3
    assert (frame.groupby("region")["store"].nunique() == 4).all()
    assert set(frame["category"]) == set(CATEGORIES)
    assert (frame[DEMAND_TIME] == pd.Timestamp(START)).all() and (frame["day_of_week"] == START.weekday()).all()
    assert set(frame["promo"].unique()) <= {0, 1} and (frame["price"] <= frame["base_price"]).all()
    assert pd.api.types.is_float_dtype(frame[DEMAND_LABEL]) and (frame[DEMAND_LABEL] >= 0).all()
    assert frame["temperature"].isna().mean() < 0.03  # a sensor gap now and then


def test_fewer_rows_sample_the_range_and_more_rows_widen_it() -> None:
    few = demand_day(START, 100, seed=1)
    assert len(few) == 100 and not few.duplicated(["store", "product"]).any()
    many = demand_day(START, 2_000, seed=1)
    assert len(many) == 2_000 and many["product"].nunique() > 60
    assert len(demand_day(START, 0, seed=1)) == 0
    with pytest.raises(ValueError, match="rows"):
        demand_day(START, -1)


def test_a_day_is_the_same_whichever_way_it_is_drawn() -> None:
    day = START + timedelta(days=3)
    a = demand_day(day, 300, seed=5)
    pd.testing.assert_frame_equal(a, demand_day(day, 300, seed=5))
    week = demand_days(START, 5, 300, seed=5)
    pd.testing.assert_frame_equal(week[week[DEMAND_TIME] == pd.Timestamp(day)].reset_index(drop=True), a)
    assert not demand_day(day, 300, seed=6)[DEMAND_LABEL].equals(a[DEMAND_LABEL])
    assert not demand_day(day + timedelta(days=1), 300, seed=5)[DEMAND_LABEL].equals(a[DEMAND_LABEL])


def test_the_label_is_a_number_with_many_values_and_a_realistic_shape() -> None:
    frame = demand_days(START, 5, 720, seed=0)
    units = frame[DEMAND_LABEL]
    assert units.nunique() > 200
    assert 15 < units.mean() < 80 and units.median() < units.mean()  # skewed to the right, like sales
    assert (units == 0).mean() < 0.05
    by_day = frame.groupby("day_of_week")[DEMAND_LABEL].mean()
    assert by_day[5] > 1.2 * by_day[0]  # Saturdays sell more than Mondays (Jan 3 vs Jan 5)
    promo = frame.groupby("promo")[DEMAND_LABEL].mean()
    assert promo[1] > 1.4 * promo[0]
    # heteroscedastic: the spread grows with the level (busy products vary more in units)
    level = frame.groupby(["store", "product"])[DEMAND_LABEL].transform("mean")
    low, high = frame[level < level.quantile(0.25)], frame[level > level.quantile(0.75)]
    assert high[DEMAND_LABEL].std() > 3 * low[DEMAND_LABEL].std()


def test_drift_moves_prices_promotions_and_the_south() -> None:
    days = [START + timedelta(days=i) for i in range(3)]
    usual = pd.concat([demand_day(d, 720, seed=2) for d in days], ignore_index=True)
    drifted = pd.concat([demand_day(d, 720, seed=2, drifted=True) for d in days], ignore_index=True)
    assert usual["promo"].mean() == pytest.approx(0.10, abs=0.03)
    assert drifted["promo"].mean() == pytest.approx(0.30, abs=0.04)
    ratio = drifted["base_price"] / usual["base_price"]
    dearer = usual["category"].isin(["beverages", "snacks"])
    assert ratio[dearer].to_numpy() == pytest.approx(1.25, abs=0.01)
    assert ratio[~dearer].to_numpy() == pytest.approx(1.0)
    np.testing.assert_array_equal(usual["temperature"], drifted["temperature"])  # the weather is the same

    def south_share(frame: pd.DataFrame) -> float:
        by_region = frame.groupby("region")[DEMAND_LABEL].mean()
        return float(by_region["south"] / by_region["central"])

    assert south_share(drifted) < 0.75 * south_share(usual)  # the competitor takes a share of the south


def test_drift_breaks_what_was_learned_before_it() -> None:
    """A stale model (mean units per store, product and promo over four usual days) misses a drifted day by far more
    than the same day undrifted: the relation between the features and the label changed, not only the features."""
    history = demand_days(START, 4, 720, seed=2)
    table = history.groupby(["store", "product", "promo"])[DEMAND_LABEL].mean().rename("predicted").reset_index()
    fallback = history.groupby(["store", "product"])[DEMAND_LABEL].mean().rename("fallback").reset_index()

    def rmse(frame: pd.DataFrame) -> float:
        scored = frame.merge(table, how="left").merge(fallback, how="left")
        predicted = scored["predicted"].fillna(scored["fallback"]).fillna(history[DEMAND_LABEL].mean())
        return float(np.sqrt(((scored[DEMAND_LABEL] - predicted) ** 2).mean()))

    day = START + timedelta(days=4)
    assert rmse(demand_day(day, 720, seed=2, drifted=True)) > 1.2 * rmse(demand_day(day, 720, seed=2))


def test_drift_switches_on_from_its_day() -> None:
    assert not drifted_on(START + timedelta(days=2), START, 3)
    assert drifted_on(START + timedelta(days=3), START, 3)
    assert not drifted_on(START + timedelta(days=30), START, None)


def test_write_demand_world_lands_features_and_labels_apart(tmp_path: Path) -> None:
    out = write_demand_world(tmp_path, START, days=4, rows_per_day=120, label_lag_days=2, drift_from_day=2, seed=3)
    assert out["rows"] == 480 and out["drifted_days"] == [START + timedelta(days=2), START + timedelta(days=3)]
    assert out["labels_land"][START] == START + timedelta(days=2)
    assert [p.name for p in out["features"]] == [f"2026-01-0{i}.parquet" for i in range(1, 5)]
    for i, (features_path, labels_path) in enumerate(zip(out["features"], out["labels"])):
        assert features_path == tmp_path / "features" / features_path.name
        assert labels_path == tmp_path / "labels" / features_path.name
        features, labels = pd.read_parquet(features_path), pd.read_parquet(labels_path)
        assert list(features.columns) == list(DEMAND_COLUMNS) and DEMAND_LABEL not in features
        assert list(labels.columns) == [DEMAND_ID, DEMAND_LABEL]
        expected = demand_day(START + timedelta(days=i), 120, seed=3, drifted=i >= 2)
        pd.testing.assert_frame_equal(features.merge(labels, on=DEMAND_ID), expected, check_dtype=False)
    assert not list(tmp_path.rglob("*.partial"))
