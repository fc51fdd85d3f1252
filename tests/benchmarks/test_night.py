"""The night benchmark's plain script does the nightly flow's steps: same branch, same challenger, same task names."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from benchmarks.night import Stages, _prefect_runs, plain_night
from flows.nightly import NightlyParams, nightly
from flows.train import EstimatorParams
from tasks.catalogue.config import GateConfig
from tasks.data.datasets import DatasetParams
from tasks.data.demo import DemoDrift, generate_demo
from tasks.registry.versions import AliasState, alias_state

pytestmark = [pytest.mark.usefixtures("prefect_harness"), pytest.mark.integration]


def _params(path: Path, name: str) -> NightlyParams:
    return NightlyParams(model_name=name, batches=[DatasetParams(source=str(path), label="churned")], reference=None,
                         window=1, estimator=EstimatorParams(param_grid={"n_estimators": [20], "min_samples_leaf": [3]}),
                         cv_folds=2, gate=GateConfig(resamples=200, absolute_floor=0.55), seed=7)


def test_plain_script_and_flow_take_the_same_steps_and_branch(tracking, tmp_path: Path) -> None:
    first, second = tmp_path / "night-1.parquet", tmp_path / "night-2.parquet"
    generate_demo(3_000, seed=1, day=1).to_parquet(first, index=False)
    generate_demo(3_000, seed=2, day=2, drift=DemoDrift(concept=1.0)).to_parquet(second, index=False)
    flow_model, script_model = (f"night-{side}-{uuid.uuid4().hex[:6]}" for side in ("flow", "script"))
    for name in (flow_model, script_model):  # the same champion for both, made by the script (no champion yet)
        made = plain_night(_params(first, name))
        assert (made["action"], made["champion_after"], made["retrain_reasons"]) == ("promoted", "1",
                                                                                    ["no champion yet"])

    since = time.time()
    flow = nightly(_params(second, flow_model))
    ran = _prefect_runs(since)
    stages = Stages()
    script = plain_night(_params(second, script_model), stages)

    assert flow.action == script["action"] == "promoted"
    assert flow.retrain_reasons == script["retrain_reasons"] and flow.retrain_reasons  # the concept drift was seen
    assert flow.challenger_version == script["challenger_version"] == "2"
    for key in ("challenger", "champion", "ci_low", "ci_high", "promote", "rows"):
        assert getattr(flow.decision, key) == script["decision"][key], key
    assert alias_state(tracking, flow_model) == alias_state(tracking, script_model) == AliasState("2", "1")
    assert set(ran["stages"]) == set(stages.seconds)  # every task the flow ran, the script timed, and no other
    assert ran["flow_runs"] == 1 and ran["subflow_task_runs"] == 0  # one flow run: monitor and train are its tasks
