"""The fleet benchmark's pure parts: its generated catalogue is valid, and a run that did not promote fails loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from benchmarks.fleet import WARMUP, catalogue_entry, check_rows, memory_mb, model_names
from tasks.catalogue.schema import load_catalogue


def test_the_generated_catalogue_alternates_both_streams_and_validates(tmp_path: Path) -> None:
    names = model_names(4)
    assert names == ["fleet-000-churn", "fleet-001-fraud", "fleet-002-churn", "fleet-003-fraud"]
    path = tmp_path / "models.yaml"
    path.write_text(yaml.safe_dump({"models": [catalogue_entry(n) for n in [*names, *WARMUP]]}))
    models = load_catalogue(path).models
    assert [m.name for m in models] == [*names, *WARMUP]
    churn, fraud = models[0], models[1]
    assert churn.labels is not None and churn.labels.lag_days == 2 and churn.estimator.kind == "random_forest"
    assert fraud.labels is None and "*" in fraud.features and fraud.estimator.kind == "hist_gradient_boosting"
    assert len({m.features for m in models}) == len(models)  # every model lands in its own folder


def _row(name: str, **changes: object) -> dict[str, object]:
    return {"model_name": name, "state": "Completed", "action": "promoted", "champion": "1",
            "registry_champion": "1", "note": ""} | changes


def test_check_rows_accepts_only_every_model_completed_promoted_and_registered() -> None:
    names = model_names(3)
    check_rows([_row(n) for n in names], names)
    for bad, why in [([_row(names[0]), _row(names[1])], "missing"),
                     ([_row(names[0]), _row(names[1]), _row(names[2], state="Failed", note="boom")], "Failed"),
                     ([_row(names[0]), _row(names[1]), _row(names[2], action="no-labels", champion=None)],
                      "no-labels"),
                     ([_row(names[0]), _row(names[1]), _row(names[2], registry_champion=None)], "registry=None")]:
        with pytest.raises(RuntimeError, match=why):
            check_rows(bad, names)


def test_memory_of_this_process_and_of_none() -> None:
    import os

    now, peak = memory_mb(os.getpid()) or (0.0, 0.0)
    assert 0 < now <= peak
    assert memory_mb(2**22 + 1) is None  # above the kernel's pid limit: never a live process
