from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from flows.train import EstimatorParams, TrainParams, train
from tasks.data.datasets import DatasetParams
from tasks.data.demo import load_iris
from tasks.registry.runs import get_run
from tasks.registry.store import client, ensure_experiment
from tasks.registry.versions import list_versions, load_pyfunc

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_seed_parity_iris_random_forest_from_the_registry(tracking, model_name) -> None:
    """The seed: RandomForestClassifier(random_state=42), train_test_split(test_size=0.3, random_state=42) → 1.00."""
    from sklearn import datasets
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import train_test_split

    iris = datasets.load_iris()
    X_train, X_test, y_train, y_test = train_test_split(iris.data, iris.target, test_size=0.3, random_state=42)
    seed_model = RandomForestClassifier(random_state=42).fit(X_train, y_train)
    seed_accuracy = accuracy_score(y_test, seed_model.predict(X_test))
    assert f"Accuracy: {seed_accuracy:.2f}" == "Accuracy: 1.00"

    result = train(TrainParams(model_name=model_name, estimator=EstimatorParams(param_grid={}), test_size=0.3, seed=42))
    assert f"Accuracy: {result.test_metrics['accuracy']:.2f}" == "Accuracy: 1.00"
    assert result.model_uri == f"models:/{model_name}/1" and result.rows_test == 45

    registered = load_pyfunc(tracking, model_name, version=result.model_version)  # not a pickle
    frame = load_iris()
    _, test = train_test_split(frame, test_size=0.3, random_state=42)
    features = [c for c in frame.columns if c != "species"]
    np.testing.assert_array_equal(test[features].to_numpy(), X_test)  # the very same rows
    np.testing.assert_array_equal(np.asarray(registered.predict(test[features])),
                                  iris.target_names[seed_model.predict(X_test)])


def test_demo_training_searches_candidates_and_records_lineage(tracking, model_name) -> None:
    params = TrainParams(
        dataset=DatasetParams(source="demo", rows=3_000, day=0), model_name=model_name, cv_folds=3,
        estimator=EstimatorParams(param_grid={"n_estimators": [30], "max_depth": [4, None]}, search_rows=1_000),
        stratify=True,
    )
    state = train(params, return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result.candidates == 2 and result.best_params["max_depth"] in (4, None)
    assert result.rows_train == 2_100 and result.rows_test == 900
    assert 0.7 < result.test_metrics["roc_auc"] < 0.95

    run = get_run(tracking, result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["prefect.flow_run_id"] == str(state.state_details.flow_run_id)
    assert run.data.tags["nightshift.dataset_fingerprint"] == result.dataset_fingerprint
    assert {"cv_roc_auc", "test_roc_auc", "test_log_loss", "test_f1", "test_accuracy"} <= set(run.data.metrics)
    # The search saw a 1000-row sample; the chosen candidate was refitted on all 2100 training rows.
    assert run.data.metrics["rows_search"] == 1_000 and run.data.metrics["rows_train"] == 2_100
    assert run.data.params["search_rows"] == "1000"
    contexts = sorted(t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context")
    assert contexts == ["evaluation", "training"]
    (version,) = list_versions(tracking, model_name)
    assert version.run_id == result.run_id and version.aliases == []  # no promotion here


def _corrupt(tmp_path: Path) -> str:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really parquet")
    return str(path)


def _csv(tmp_path: Path, frame: pd.DataFrame) -> str:
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    ("make_source", "label", "folds", "message"),
    [
        (lambda p: "irises", None, 5, "Unknown dataset 'irises': use one of iris, demo"),
        (lambda p: str(p / "nowhere.csv"), None, 5, "Dataset file not found: "),
        (_corrupt, None, 5, "broken.parquet is not valid Parquet"),
        (lambda p: _csv(p, load_iris()), "label", 5, "Label column 'label' is not in "),
        (lambda p: _csv(p, load_iris().head(50)), "species", 5, "has only one class ('setosa')"),
        (lambda p: _csv(p, load_iris().groupby("species").head(2)), "species", 5, "fewer than cv_folds=5"),
    ],
    ids=["unknown-name", "missing-file", "corrupt-parquet", "no-label-column", "one-class", "too-few-rows"],
)
def test_bad_input_fails_before_training_and_registers_nothing(tmp_path, tracking, model_name, make_source, label,
                                                              folds, message) -> None:
    runs_before = len(client(tracking).search_runs([ensure_experiment(tracking)]))
    params = TrainParams(dataset=DatasetParams(source=make_source(tmp_path), label=label), model_name=model_name,
                         cv_folds=folds)
    state = train(params, return_state=True)
    assert state.is_failed()
    assert message in state.message
    assert list_versions(tracking, model_name) == []
    assert len(client(tracking).search_runs([ensure_experiment(tracking)])) == runs_before  # failed before any run


def test_failure_during_training_marks_the_mlflow_run_failed(tracking, model_name) -> None:
    params = TrainParams(model_name=model_name, estimator=EstimatorParams(param_grid={"max_depth": [-3]}))
    state = train(params, return_state=True)
    assert state.is_failed() and "max_depth" in state.message
    assert list_versions(tracking, model_name) == []
    (run,) = client(tracking).search_runs([ensure_experiment(tracking)],
                                            filter_string=f"tags.`nightshift.model_name` = '{model_name}'")
    assert run.info.status == "FAILED"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"test_size": 1.5}, "test_size"),
        ({"cv_folds": 1}, "cv_folds"),
        ({"model_name": "bad name!"}, "model_name"),
        ({"estimator": {"kind": "svm"}}, "kind"),
        ({"estimator": {"param_grid": {"max_dept": [3]}}}, "max_dept"),
        ({"dataset": {"source": "demo", "rows": 0}}, "rows"),
        ({"selection_metric": "precision"}, "selection_metric"),
        ({"dataset": {"source": "demo", "drift": {"category_mix": 2}}}, "category_mix"),
    ],
)
def test_bad_parameter_values_fail_before_any_work(overrides: dict, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        TrainParams(**overrides)


def test_flow_rejects_bad_parameters_without_running() -> None:
    from prefect.exceptions import ParameterTypeError

    with pytest.raises(ParameterTypeError, match="test_size"):
        train(params={"test_size": 3})


def test_regression_end_to_end_train_monitor_score(tracking, model_name, tmp_path: Path) -> None:
    """sklearn's diabetes table (a numeric target): refused as classes with a sentence, trained as a regression,
    monitored with rmse on a labeled batch, scored in batch as numbers."""
    from sklearn.datasets import load_diabetes

    from flows.batch_predict import BatchPredictParams, batch_predict
    from flows.monitor import MonitorParams, monitor
    from tasks.registry.versions import load_version, set_alias

    frame = load_diabetes(as_frame=True).frame
    path = tmp_path / "diabetes.parquet"
    frame.to_parquet(path)
    dataset = DatasetParams(source=str(path), label="target")
    refused = train(TrainParams(dataset=dataset, model_name=model_name), return_state=True)
    assert refused.is_failed() and "214 distinct numeric values: set task: regression" in refused.message

    result = train(TrainParams(dataset=dataset, model_name=model_name, task="regression", cv_folds=3,
                               estimator=EstimatorParams(param_grid={"n_estimators": [50], "max_depth": [4]})))
    assert result.task == "regression" and set(result.test_metrics) == {"rmse", "mae", "r2"}
    assert 40 < result.test_metrics["rmse"] < 70 and result.test_metrics["r2"] > 0.3
    loaded = load_version(tracking, model_name, result.model_version)
    assert loaded.contract.task == "regression" and loaded.contract.label_classes == []

    batch = tmp_path / "night.parquet"
    frame.sample(200, random_state=1).to_parquet(batch)
    checked = monitor(MonitorParams(batch=DatasetParams(source=str(batch), label="target"), model_name=model_name,
                                    max_metric_drop=25.0))
    assert checked.performance is not None and checked.performance.metric == "rmse"
    assert checked.performance.batch_metrics["rmse"] > 0 and not checked.performance.degraded

    set_alias(tracking, model_name, "champion", result.model_version)
    summary = batch_predict(BatchPredictParams(source=str(batch), output=str(tmp_path / "scored.parquet"),
                                               model_name=model_name))
    scored = pd.read_parquet(summary.output)
    assert scored["prediction"].dtype == "float64" and len(scored) == 200 and summary.classes == []
    assert sum(summary.histogram_counts) == 200 and scored["prediction"].between(25, 346).all()


def test_a_factory_trains_from_a_code_path_only_the_catalogue_names(tracking, model_name, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The example's pipeline through the train flow: refused from a code_path no catalogue names (a UI form must
    not make any folder importable), trained and registered once examples/demand/models.yaml names it."""
    from datetime import date

    from nightshift.settings import PROJECT_ROOT
    from tasks.data.demand import demand_days
    from tasks.registry.versions import load_version

    example = PROJECT_ROOT / "examples" / "demand"
    data = tmp_path / "demand.parquet"
    demand_days(date(2026, 3, 2), 3, 300).drop(columns=["day"]).to_parquet(data)
    params = TrainParams(
        dataset=DatasetParams(source=str(data), label="units_sold", exclude_columns=["row_id"]), model_name=model_name,
        task="regression", cv_folds=2, estimator=EstimatorParams(
            factory="demand_model.pipeline:make_pipeline", code_path=str(example),
            trusted_types=["demand_model.features.DemandFeatures"], param_grid={"model__max_iter": [30]}))
    monkeypatch.setenv("NIGHTSHIFT_CATALOGUE_PATH", str(tmp_path / "no-catalogue.yaml"))
    refused = train(params, return_state=True)
    assert refused.is_failed() and "is not named by any model of the catalogue" in refused.message
    monkeypatch.setenv("NIGHTSHIFT_CATALOGUE_PATH", str(example / "models.yaml"))
    result = train(params)
    loaded = load_version(tracking, model_name, result.model_version)
    assert result.estimator == "demand_model.pipeline:make_pipeline" and result.best_params == {"model__max_iter": 30}
    assert type(loaded.model.named_steps["features"]).__name__ == "DemandFeatures"
    assert loaded.model.get_params()["model__max_iter"] == 30 and result.test_metrics["r2"] > 0.3
