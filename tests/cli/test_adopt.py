"""`python -m cli.adopt`: a model trained outside nightshift becomes a catalogue model's v1 and champion, or is
refused with one sentence (exit 2) and nothing registered."""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cli.adopt import main
from tests.catalogues import write_catalogue
from tests.cli.test_catalogue import Ran


@pytest.fixture
def adopt(capsys: pytest.CaptureFixture[str]):
    """`main(argv)` in this process, its exit code and output."""
    def run(*args: str) -> Ran:
        code = main(list(args))
        out = capsys.readouterr()
        return Ran(code, " ".join(re.sub("[│┃]", " ", out.out).split()), out.err)  # the table's cells, unwrapped
    return run


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A regressor a team trained on sklearn's diabetes table (first 300 rows), saved as skops and joblib, and the
    other rows as the reference (one label blanked)."""
    import joblib
    import skops.io as sio
    from sklearn.datasets import load_diabetes
    from sklearn.ensemble import RandomForestRegressor

    folder = tmp_path_factory.mktemp("diabetes")
    frame = load_diabetes(as_frame=True).frame
    features = frame.drop(columns="target")
    model = RandomForestRegressor(n_estimators=10, max_depth=4, random_state=0).fit(features[:300], frame["target"][:300])
    sio.dump(model, folder / "model.skops")
    joblib.dump(model, folder / "model.joblib")
    reference = frame.iloc[300:].reset_index(drop=True)
    reference.loc[0, "target"] = np.nan  # a row whose label has not landed: not in the metrics
    reference.to_csv(folder / "reference.csv", index=False)
    reference.drop(columns="bmi").to_csv(folder / "no-bmi.csv", index=False)
    return {"model": model, "folder": folder, "reference": reference}


@pytest.fixture(scope="module")
def churn(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A classifier pipeline whose categorical column comes first (the contract keeps the model's column order), string
    classes, saved as skops; its reference parquet has an id column the catalogue names."""
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"customer_id": np.arange(n), "plan": rng.choice(["basic", "pro"], n),
                          "tenure": rng.integers(1, 60, n), "spend": rng.normal(50, 10, n)})
    frame["churned"] = np.where(frame["tenure"] + rng.normal(0, 10, n) < 25, "yes", "no")
    model = Pipeline([("prep", ColumnTransformer([("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])],
                                                 remainder="passthrough")),
                      ("model", LogisticRegression(max_iter=500))]).fit(frame[["plan", "tenure", "spend"]],
                                                                         frame["churned"])
    folder = tmp_path_factory.mktemp("churn")
    sio.dump(model, folder / "model.skops")
    frame.to_parquet(folder / "reference.parquet")
    frame.assign(churned=frame["churned"].where(frame.index % 7 > 0, "maybe")).to_parquet(folder / "maybe.parquet")
    return {"model": model, "folder": folder}


def _catalogue(folder: Path, name: str, task: str, label: str, **extra: object) -> str:
    entry = {"name": name, "features": "{state_dir}/landing/" + name + "/{date:%Y-%m-%d}.parquet", "label": label,
             "task": task, **extra}
    return str(write_catalogue(folder, [entry]))


def _registered(tracking, name: str) -> list[object]:
    from tasks.registry.versions import list_versions

    return list_versions(tracking, name)


def _runs_of(tracking, name: str) -> list[object]:
    from tasks.registry.store import client, ensure_experiment

    return client(tracking).search_runs([ensure_experiment(tracking)],
                                        filter_string=f"tags.`nightshift.model_name` = '{name}'")


def test_a_skops_regressor_becomes_v1_and_champion_and_a_second_adoption_is_refused(
        adopt, tracking, model_name, tmp_path, diabetes) -> None:
    from tasks.registry.audit import read_audit
    from tasks.registry.promote import recorded_decision
    from tasks.registry.runs import get_run, run_metrics
    from tasks.registry.versions import get_alias, load_version

    folder = diabetes["folder"]
    catalogue = _catalogue(tmp_path, model_name, "regression", "target", id_columns=["unused_id"])
    ran = adopt(model_name, "--from", str(folder / "model.skops"), "--reference", str(folder / "reference.csv"),
                "--by", "alice", "--reason", "the pricing team's model since 2024", "--catalogue", catalogue)
    assert ran.returncode == 0, ran.stderr
    assert f"Adopted {model_name} v1 as champion" in ran.stdout
    assert "142 rows, 141 labeled" in ran.stdout and "measured on the reference's labeled rows" in ran.stdout
    assert "adopted by alice" in ran.stdout and "alias champion -> v1" in ran.stdout

    assert get_alias(tracking, model_name, "champion") == "1"
    loaded = load_version(tracking, model_name, "1")
    assert loaded.contract.features == list(diabetes["model"].feature_names_in_)
    assert loaded.contract.task == "regression"
    labeled = diabetes["reference"].dropna(subset=["target"])
    expected = float(np.sqrt(np.mean((diabetes["model"].predict(labeled.drop(columns="target"))
                                      - labeled["target"]) ** 2)))
    assert run_metrics(tracking, loaded.ref.run_id, "test_")["rmse"] == pytest.approx(expected)
    assert float(loaded.ref.tags["test_rmse"]) == pytest.approx(expected, abs=1e-5)
    assert loaded.ref.tags["nightshift.adopted_from"] == str(folder / "model.skops")
    assert loaded.ref.tags["nightshift.contract_fingerprint"] == loaded.contract.fingerprint()
    assert get_run(tracking, loaded.ref.run_id).info.status == "FINISHED"
    decision = recorded_decision(tracking, model_name, "1")
    assert decision.promote and decision.reason.startswith("adopted: ") and decision.metric == "rmse"
    [record] = read_audit(tracking, model_name)
    assert (record.action, record.by, record.reason, record.to_version) == (
        "adopted", "alice", "the pricing team's model since 2024", "1")

    again = adopt(model_name, "--from", str(folder / "model.skops"), "--reference", str(folder / "reference.csv"),
                  "--catalogue", catalogue)
    assert again.returncode == 2 and again.stdout == ""
    assert "already has 1 registered version(s) (newest v1, champion v1)" in again.stderr
    assert "adoption only starts a model's history" in again.stderr
    assert len(_registered(tracking, model_name)) == 1


def test_a_classifier_keeps_its_column_order_and_classes_and_the_wrong_task_or_labels_are_refused(
        adopt, tracking, model_name, tmp_path, churn) -> None:
    from tasks.registry.audit import read_audit
    from tasks.registry.versions import load_version

    folder = churn["folder"]
    model_file, reference = str(folder / "model.skops"), str(folder / "reference.parquet")
    wrong = adopt(model_name, "--from", model_file, "--reference", reference,
                  "--catalogue", _catalogue(tmp_path, model_name, "regression", "churned"))
    assert wrong.returncode == 2
    assert "is a classifier (it has classes_), but the catalogue gives" in wrong.stderr
    assert "task: regression" in wrong.stderr

    catalogue = _catalogue(tmp_path, model_name, "classification", "churned", id_columns=["customer_id"])
    maybe = adopt(model_name, "--from", model_file, "--reference", str(folder / "maybe.parquet"), "--catalogue",
                  catalogue)
    assert maybe.returncode == 2 and "does not predict: 'maybe'; its classes are ['no', 'yes']" in maybe.stderr
    assert _registered(tracking, model_name) == [] and _runs_of(tracking, model_name) == []

    ran = adopt(model_name, "--from", model_file, "--reference", reference, "--catalogue", catalogue)
    assert ran.returncode == 0, ran.stderr
    assert "roc_auc" in ran.stdout
    loaded = load_version(tracking, model_name, "champion")
    assert loaded.contract.features == ["plan", "tenure", "spend"]  # the pipeline's order, categorical first
    assert loaded.contract.categorical == ("plan",) and loaded.contract.label_classes == ["no", "yes"]
    assert loaded.contract.optional == ["customer_id"]
    assert 0.5 < float(loaded.ref.tags["test_roc_auc"]) <= 1.0
    assert read_audit(tracking, model_name)[0].by  # the login name when --by is not given


def test_a_joblib_file_loads_only_with_trust_pickle(adopt, tracking, model_name, tmp_path, diabetes) -> None:
    from tasks.registry.versions import get_alias

    folder = diabetes["folder"]
    args = [model_name, "--from", str(folder / "model.joblib"), "--reference", str(folder / "reference.csv"),
            "--catalogue", _catalogue(tmp_path, model_name, "regression", "target")]
    refused = adopt(*args)
    assert refused.returncode == 2
    assert "is a pickle, and loading a pickle runs whatever code it holds; pass --trust-pickle" in refused.stderr
    assert _registered(tracking, model_name) == []
    ran = adopt(*args, "--trust-pickle")
    assert ran.returncode == 0, ran.stderr
    assert get_alias(tracking, model_name, "champion") == "1"


def test_a_runs_uri_loads_from_the_tracking_server(adopt, tracking, model_name, tmp_path, diabetes) -> None:
    from tasks.registry.runs import finish_run, log_sklearn_model, start_run
    from tasks.registry.versions import get_alias, version_tags

    run_id = start_run(tracking, "the team's own training run")
    log_sklearn_model(tracking, run_id, diabetes["model"], diabetes["reference"].drop(columns="target").head(5))
    finish_run(tracking, run_id)
    folder = diabetes["folder"]
    ran = adopt(model_name, "--from", f"runs:/{run_id}/model", "--reference", str(folder / "reference.csv"),
                "--catalogue", _catalogue(tmp_path, model_name, "regression", "target"))
    assert ran.returncode == 0, ran.stderr
    assert get_alias(tracking, model_name, "champion") == "1"
    assert version_tags(tracking, model_name, "1")["nightshift.adopted_from"] == f"runs:/{run_id}/model"


def test_a_model_that_cannot_predict_the_reference_leaves_nothing_registered(
        adopt, tracking, model_name, tmp_path, diabetes) -> None:
    from sklearn.linear_model import Ridge

    folder = diabetes["folder"]
    catalogue = _catalogue(tmp_path, model_name, "regression", "target")
    missing = adopt(model_name, "--from", str(folder / "model.skops"), "--reference", str(folder / "no-bmi.csv"),
                    "--catalogue", catalogue)
    assert missing.returncode == 2
    assert "the reference has no column(s) 'bmi', which the RandomForestRegressor needs" in missing.stderr

    import skops.io as sio

    other = Ridge().fit(np.arange(30.0).reshape(10, 3), np.arange(10.0))  # fitted on 3 unnamed columns elsewhere
    sio.dump(other, tmp_path / "other.skops")
    cannot = adopt(model_name, "--from", str(tmp_path / "other.skops"), "--reference", str(folder / "reference.csv"),
                   "--catalogue", catalogue)
    assert cannot.returncode == 2
    assert "the Ridge cannot predict the reference rows (ValueError: X has 10 features" in cannot.stderr
    assert _registered(tracking, model_name) == [] and _runs_of(tracking, model_name) == []


def test_an_unknown_model_and_untrusted_types_are_refused(adopt, tracking, model_name, tmp_path, diabetes) -> None:
    folder = diabetes["folder"]
    catalogue = _catalogue(tmp_path, model_name, "regression", "target")
    unknown = adopt("nobody", "--from", str(folder / "model.skops"), "--reference", "x.csv", "--catalogue", catalogue)
    assert unknown.returncode == 2
    assert f"model 'nobody' is not in the catalogue (known: {model_name})" in unknown.stderr

    (tmp_path / "team_scale.py").write_text(textwrap.dedent('''
        from sklearn.base import BaseEstimator, TransformerMixin

        class Scale(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                return self

            def transform(self, X):
                return X
    '''))
    sys.path.insert(0, str(tmp_path))
    try:
        import joblib
        import skops.io as sio
        import team_scale
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import Pipeline

        X = diabetes["reference"].drop(columns="target")
        custom = Pipeline([("scale", team_scale.Scale()), ("model", Ridge())]).fit(X, X["age"])
        sio.dump(custom, tmp_path / "custom.skops")
        joblib.dump(custom, tmp_path / "custom.joblib")
        untrusted = adopt(model_name, "--from", str(tmp_path / "custom.skops"), "--reference",
                          str(folder / "reference.csv"), "--catalogue", catalogue)
        assert untrusted.returncode == 2
        assert "holds type(s) nobody declared trusted: team_scale.Scale. Review them" in untrusted.stderr
        assert _runs_of(tracking, model_name) == []  # refused before loading: no run at all
        # A trusted pickle loads and predicts, but the registry stores skops: the same type is refused there.
        stored = adopt(model_name, "--from", str(tmp_path / "custom.joblib"), "--trust-pickle", "--reference",
                       str(folder / "reference.csv"), "--catalogue", catalogue)
        assert stored.returncode == 2
        assert stored.stderr.startswith("not registered: the fitted Pipeline holds type(s) nobody declared trusted: "
                                        "team_scale.Scale.")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("team_scale", None)
    assert _registered(tracking, model_name) == []
    assert [r.info.status for r in _runs_of(tracking, model_name)] == ["FAILED"]
