"""The shadow judged on live rows: served rows of both versions paired by request id and row, joined to the day's
labels by row id, and compared with the gate's paired bootstrap."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.catalogue.schema import CatalogueModel, parse_catalogue
from tasks.data.served import model_dir
from tasks.monitoring.shadow import compare_live, live_pairs, paired_rows

DAY = date(2026, 12, 1)


def shadow_model(tmp_path: Path, name: str = "shadowed", **gate: object) -> CatalogueModel:
    return CatalogueModel.model_validate({
        "name": name, "features": str(tmp_path / "landing" / "features" / "{date:%Y-%m-%d}.parquet"),
        "label": "churned", "id_columns": ["customer_id"],
        "labels": {"source": str(tmp_path / "landing" / "labels" / "{date:%Y-%m-%d}.parquet"), "key": "customer_id",
                   "lag_days": 1},
        "gate": {"shadow": "required", "shadow_min_rows": 300, "resamples": 300, **gate}})


def _part(folder: Path, frame: pd.DataFrame, name: str = "part-1.parquet") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / name, index=False)


def land_live_day(root: Path, tmp_path: Path, day: date, n: int, shadow_quality: float, seed: int,
                  segment_b: float = 0.0, labels: bool = True, model: str = "shadowed",
                  versions: tuple[str, str] = ("1", "2"), swap: bool = False) -> pd.DataFrame:
    """A served day as the model server captures it: v1 answers, v2 scores the same rows in shadow; the champion's
    scores follow the label with noise, the shadow's with `shadow_quality` of the signal (and none at all on
    segment b rows; `swap`: the other way round). Labels of the day land in the labels file keyed by customer_id
    (`labels` False: not yet)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    segment = np.where(rng.random(n) < segment_b, "b", "a")
    champ = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    signal = np.where(segment == "b", 0.0, shadow_quality)
    theirs = np.clip(0.5 + signal * 0.6 * (y - 0.5) + rng.normal(0, 0.25, n), 0.01, 0.99)
    if swap:
        champ, theirs = theirs, champ
    ids = [f"{day:%m%d}-{i}" for i in range(n)]
    rids = [f"r{day:%m%d}-{i // 3}" for i in range(n)]  # 3 rows per request
    base = pd.DataFrame({"request_id": rids, "row": [i % 3 for i in range(n)], "row_id": ids,
                         "captured_at": pd.Timestamp(day, tz="UTC"), "model": model})
    served = base.assign(model_version=versions[0], plan=segment, tenure=rng.normal(size=n),
                         prediction=(champ > 0.5).astype(int), proba_0=1 - champ, proba_1=champ)
    shadowed = base.assign(model_version=versions[1], prediction=(theirs > 0.5).astype(int), proba_0=1 - theirs,
                           proba_1=theirs)
    folder = root / model_dir(model)
    _part(folder / day.isoformat(), served)
    _part(folder / "shadow" / day.isoformat(), shadowed)
    if labels:
        _part(tmp_path / "landing" / "labels", pd.DataFrame({"customer_id": ids, "churned": y}),
              f"{day.isoformat()}.parquet")
    return served


def test_pairs_join_on_request_and_row_and_labels_by_row_id(tmp_path: Path) -> None:
    root = tmp_path / "served"
    served = land_live_day(root, tmp_path, DAY, 30, 1.0, seed=1)
    # A retried request id captured twice on each side counts once; a request only the champion answered (the
    # shadow's queue was full) has no pair.
    _part(root / "shadowed" / DAY.isoformat(), served.head(3), "part-2.parquet")
    _part(root / "shadowed" / DAY.isoformat(), served.head(3).assign(request_id="dropped-by-shadow"),
          "part-3.parquet")
    pairs = paired_rows(root, "shadowed", DAY, "1", "2")
    assert len(pairs) == 30 and {"shadow_prediction", "shadow_proba_1", "proba_1"} <= set(pairs.columns)
    model = shadow_model(tmp_path)
    frame, days = live_pairs(model, root, tmp_path, "1", "2", DAY, DAY + timedelta(days=1))
    assert len(frame) == 30 and frame["churned"].notna().all()
    assert [(d.day, d.paired, d.labeled) for d in days] == [(DAY, 30, 30)]
    # Not landed yet as of the night the day itself (lag 1): paired, none labeled.
    frame, days = live_pairs(model, root, tmp_path, "1", "2", DAY, DAY)
    assert frame.empty and [(d.paired, d.labeled, d.labels) for d in days] == [(30, 0, None)]


def test_conflicting_labels_and_kept_out_days_are_not_judged(tmp_path: Path) -> None:
    root = tmp_path / "served"
    land_live_day(root, tmp_path, DAY, 30, 1.0, seed=2)
    labels_file = tmp_path / "landing" / "labels" / f"{DAY.isoformat()}.parquet"
    labels = pd.read_parquet(labels_file)
    pd.concat([labels, labels.head(4).assign(churned=lambda f: 1 - f["churned"])]).to_parquet(labels_file)
    model = shadow_model(tmp_path)
    frame, _ = live_pairs(model, root, tmp_path, "1", "2", DAY, DAY + timedelta(days=1))
    assert len(frame) == 26
    frame, days = live_pairs(model, root, tmp_path, "1", "2", DAY, DAY + timedelta(days=1), kept_out=[DAY])
    assert frame.empty and days[0].labels is None


def _judge(tmp_path: Path, quality: float, n: int, segment_b: float = 0.0, **gate: object):
    root = tmp_path / "served"
    model = shadow_model(tmp_path, **gate)
    for i in range(2):
        land_live_day(root, tmp_path, DAY + timedelta(days=i), n // 2, quality, seed=10 + i, segment_b=segment_b)
    frame, days = live_pairs(model, root, tmp_path, "1", "2", DAY, DAY + timedelta(days=2))
    return compare_live(model, frame, days, "1", "2")


def test_a_shadow_as_good_as_the_champion_is_not_worse(tmp_path: Path) -> None:
    result = _judge(tmp_path, 1.4, 1200)
    assert result.verdict == "not-worse", result.reason
    assert result.rows == 1200 and result.ci_low > -0.01 and result.shadow > result.champion
    assert "not worse live" in result.reason and "1,200 labeled live rows" in result.reason


def test_a_shadow_blind_on_a_segment_live_traffic_is_full_of_is_worse(tmp_path: Path) -> None:
    result = _judge(tmp_path, 1.4, 1200, segment_b=0.7)
    assert result.verdict == "worse", result.reason
    assert result.ci_high < -0.01 and result.shadow < result.champion
    assert "v2 is worse live" in result.reason


def test_a_slice_that_regresses_is_worse_even_when_the_whole_is_not(tmp_path: Path) -> None:
    result = _judge(tmp_path, 1.6, 1600, segment_b=0.15, slice_columns=["plan"], min_slice_rows=100)
    assert result.verdict == "worse", result.reason
    assert "slice plan=b regressed" in result.reason
    [b] = [s for s in result.slices if s.value == "b"]
    assert b.regressed and b.rows > 100


def test_fewer_labeled_rows_than_asked_for_waits_and_says_how_many(tmp_path: Path) -> None:
    result = _judge(tmp_path, 1.0, 200)
    assert result.verdict == "waiting" and result.difference is None
    assert result.reason.startswith("200 of 300 labeled live rows so far (200 scored by both")


def test_a_close_result_is_undecided(tmp_path: Path) -> None:
    result = _judge(tmp_path, 0.5, 300, shadow_min_rows=100)
    assert result.verdict == "undecided", result.reason
    assert result.ci_low <= -0.01 <= result.ci_high


def test_the_catalogue_says_what_a_shadow_needs() -> None:
    base = {"name": "m", "features": "f/{date:%Y-%m-%d}.csv", "label": "y", "gate": {"shadow": "required"}}
    with pytest.raises(Exception, match="gate.shadow: required needs id_columns"):
        parse_catalogue({"models": [base]}, "models.yaml")
    keyed = {**base, "id_columns": ["id"], "labels": {"source": "l/{date:%Y-%m-%d}.csv", "key": ["id", "day"]}}
    with pytest.raises(Exception, match="key the labels by 'id' alone"):
        parse_catalogue({"models": [keyed]}, "models.yaml")
    with pytest.raises(Exception, match="shadow_margin 2.0 is more than roc_auc can move"):
        parse_catalogue({"models": [{**base, "id_columns": ["id"], "gate": {"shadow": "advisory",
                                                                            "shadow_margin": 2.0}}]}, "models.yaml")
    ok = parse_catalogue({"models": [{**base, "id_columns": ["id"]}]}, "models.yaml").models[0]
    assert (ok.gate.shadow, ok.gate.shadow_min_rows, ok.gate.shadow_margin, ok.gate.shadow_max_days) == \
        ("required", 500, 0.01, 14)
