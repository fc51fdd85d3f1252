"""The compiled small-batch scorer reproduces the pipeline exactly, or declines; request parsing names bad values."""

from __future__ import annotations

import numpy as np
import pytest

from serving.compiled import UNSEEN, compile_pipeline
from serving.errors import ScoringError
from serving.requests import columns_from_scoring_json, prepare
from serving.requests import columns_of as _columns_of
from tasks.data.contract import infer_contract
from tasks.data.datasets import infer_features
from tasks.data.demo import generate_demo
from tasks.model.train import fit_pipeline


@pytest.fixture(scope="module")
def demo():
    frame = generate_demo(2_000, seed=3)
    spec = infer_features(frame, "churned")
    return frame, spec, infer_contract(frame, spec)


def _categories(contract):
    return {c.name: list(c.categories or []) for c in contract.columns if c.kind != "numeric"}


def _batch(contract, frame):
    return prepare(_columns_of(frame[contract.features]), len(frame), contract, max(len(frame), 1))


@pytest.mark.parametrize(("kind", "params"), [("random_forest", {"n_estimators": 25, "min_samples_leaf": 2}),
                                              ("logistic_regression", {})])
def test_compiled_scorer_equals_the_pipeline_on_new_missing_and_unseen_values(demo, kind, params) -> None:
    frame, spec, contract = demo
    model = fit_pipeline(frame, spec, kind, params, seed=1)
    scorer, note = compile_pipeline(model, contract.features, contract.numeric, _categories(contract),
                                    _batch(contract, frame.head(32)))
    assert scorer is not None, note
    fresh = generate_demo(300, seed=9, day=5)[contract.features].astype(object)
    fresh.iloc[::7, 0] = None  # missing numbers
    fresh.iloc[::5, -1] = "never-seen-plan"
    fresh.iloc[::11, -2] = None  # missing categories
    batch = _batch(contract, fresh)
    expected = model.predict_proba(batch.frame(contract.features))
    assert np.array_equal(scorer(batch), expected)
    for i in range(0, 300, 13):  # the same call sklearn would make for a one-row request
        assert np.array_equal(scorer(batch.row(i)), model.predict_proba(batch.row(i).frame(contract.features)))


def test_a_pipeline_shape_it_does_not_know_is_left_to_sklearn(demo) -> None:
    from sklearn.preprocessing import MinMaxScaler

    frame, spec, contract = demo
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 5}, seed=1)
    numeric = model.named_steps["pre"].named_transformers_["num"]
    numeric.steps[-1] = ("scale", MinMaxScaler().fit(numeric[:-1].transform(frame[list(spec.numeric)])))
    scorer, note = compile_pipeline(model, contract.features, contract.numeric, _categories(contract),
                                    _batch(contract, frame.head(8)))
    assert scorer is None and "does not know" in note


def test_a_compiled_scorer_that_would_differ_is_refused(demo) -> None:
    frame, spec, contract = demo
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 5}, seed=1)
    categories = _categories(contract)
    name = contract.categorical[0]
    categories[name] = [UNSEEN]  # a wrong table entry: the check against the pipeline must notice
    model.named_steps["pre"].named_transformers_["cat"].steps[-1][1].categories_[0][0] = UNSEEN
    scorer, note = compile_pipeline(model, contract.features, contract.numeric, categories,
                                    _batch(contract, frame.head(16)))
    assert scorer is None and "differ" in note


def test_scoring_json_becomes_columns() -> None:
    split = {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, None]]}}
    assert columns_from_scoring_json(split) == ({"a": [1, 2], "b": ["x", None]}, 2)
    records = {"dataframe_records": [{"a": 1}, {"b": "y"}]}
    assert columns_from_scoring_json(records) == ({"a": [1, None], "b": [None, "y"]}, 2)


@pytest.mark.parametrize(
    ("value", "status", "fragment"),
    [("forty", 422, "must be numeric; got 'forty'"), (True, 422, "non-number"), ({"x": 1}, 422, "non-number"),
     (10**400, 422, "out of range"), (1e31, 422, "out of range"), ("inf", 422, "out of range")],
)
def test_bad_numbers_are_named(demo, value, status, fragment) -> None:
    _, _, contract = demo
    columns = _columns_of(generate_demo(3, seed=1)[contract.features])
    name = contract.numeric[1]
    columns[name][1] = value
    with pytest.raises(ScoringError) as err:
        prepare(columns, 3, contract, 10)
    assert err.value.status == status and fragment in str(err.value) and f"'{name}'" in str(err.value)


def test_numbers_as_strings_and_nulls_are_accepted(demo) -> None:
    _, _, contract = demo
    columns = _columns_of(generate_demo(3, seed=1)[contract.features])
    name = contract.numeric[0]
    columns[name] = [" 41.5", None, 7]
    columns[contract.categorical[0]] = [3, None, "basic"]
    batch = prepare(columns, 3, contract, 10)
    assert batch.numeric[0, 0] == 41.5 and np.isnan(batch.numeric[1, 0]) and batch.numeric[2, 0] == 7
    assert batch.categorical[contract.categorical[0]].tolist() == ["3", None, "basic"]
    with pytest.raises(ScoringError, match="at most 2 per request"):
        prepare(columns, 3, contract, 2)
