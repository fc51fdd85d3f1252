"""The two-segment churn world of the shadow demo: the same day is the same frame, segment b's share is what was asked,
segment a's churn follows x3 only in the new world, and a landed day's files are where the templates say."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.data.segments import SEGMENT_FEATURES, land_segment_day, segment_day

DAY = date(2026, 3, 2)
FEATURES = "{state_dir}/landing/seg/features/{date:%Y-%m-%d}.parquet"
LABELS = "{state_dir}/landing/seg/labels/{date:%Y-%m-%d}.parquet"


def test_a_day_is_the_same_whoever_draws_it_and_other_days_differ() -> None:
    one, again = segment_day(DAY, 500, 0.3, new_world=False), segment_day(DAY, 500, 0.3, new_world=False)
    pd.testing.assert_frame_equal(one, again)
    other = segment_day(DAY + timedelta(days=1), 500, 0.3, new_world=False)
    assert not np.allclose(one["x1"], other["x1"])
    assert one["customer_id"].is_unique and not set(one["customer_id"]) & set(other["customer_id"])
    assert list(one.columns) == [*SEGMENT_FEATURES, "churned"] and set(one["churned"]) <= {0, 1}


@pytest.mark.parametrize("share", [0.01, 0.5, 0.8])
def test_segment_b_makes_up_the_share_asked_for(share: float) -> None:
    frame = segment_day(DAY, 5_000, share, new_world=True)
    assert abs((frame["segment"] == "b").mean() - share) < 0.03


def test_the_segments_churn_for_opposite_reasons_and_the_new_world_adds_x3() -> None:
    old, new = segment_day(DAY, 20_000, 0.5, new_world=False), segment_day(DAY, 20_000, 0.5, new_world=True)

    def corr(frame: pd.DataFrame, segment: str, column: str) -> float:
        part = frame[frame["segment"] == segment]
        return float(np.corrcoef(part[column], part["churned"])[0, 1])

    assert corr(old, "a", "x1") > 0.3 and corr(old, "b", "x1") < -0.3 and corr(old, "b", "x2") > 0.2
    assert abs(corr(old, "a", "x3")) < 0.05 and corr(new, "a", "x3") > 0.2


def test_a_landed_day_writes_features_and_labels_keyed_by_customer_id(tmp_path: Path) -> None:
    frame = segment_day(DAY, 300, 0.5, new_world=False)
    written = land_segment_day(frame, DAY, tmp_path, FEATURES, LABELS)
    features_path = tmp_path / "landing" / "seg" / "features" / "2026-03-02.parquet"
    labels_path = tmp_path / "landing" / "seg" / "labels" / "2026-03-02.parquet"
    assert written == [features_path, labels_path]
    features, labels = pd.read_parquet(features_path), pd.read_parquet(labels_path)
    assert list(features.columns) == list(SEGMENT_FEATURES) and len(features) == 300
    assert list(labels.columns) == ["customer_id", "churned"]
    joined = features.merge(labels, on="customer_id", validate="one_to_one")
    pd.testing.assert_frame_equal(joined, frame)


def test_labels_not_landed_yet_write_only_the_features(tmp_path: Path) -> None:
    written = land_segment_day(segment_day(DAY, 100, 0.5, new_world=True), DAY, tmp_path, FEATURES)
    assert [p.parent.name for p in written] == ["features"]
    assert not (tmp_path / "landing" / "seg" / "labels").exists()


def test_what_cannot_be_drawn_or_written_is_named() -> None:
    with pytest.raises(ValueError, match="b_share"):
        segment_day(DAY, 100, 1.5, new_world=False)
    with pytest.raises(ValueError, match="glob"):
        land_segment_day(segment_day(DAY, 10, 0.5, new_world=False), DAY, Path("."), "{state_dir}/x/*.parquet")
    with pytest.raises(ValueError, match="churned"):
        land_segment_day(pd.DataFrame({"customer_id": [1]}), DAY, Path("."), FEATURES)
