from __future__ import annotations

import numpy as np
import pytest

from nightshift.errors import ConfigError
from tasks.catalogue.config import CONTROLLED_PARAMS, REGRESSOR_PARAMS, TUNABLE_PARAMS, check_param_grid
from tasks.data.datasets import infer_features
from tasks.data.demo import generate_demo
from tasks.model.train import (
    CandidateScore,
    build_pipeline,
    candidate_grid,
    cross_validate_candidate,
    cv_sample,
    fit_pipeline,
    make_estimator,
    select_best,
    split_train_test,
)


@pytest.mark.parametrize("kind", sorted(TUNABLE_PARAMS))
def test_tunable_table_matches_scikit_learn(kind: str) -> None:
    assert TUNABLE_PARAMS[kind] == set(make_estimator(kind, {}, 0).get_params()) - CONTROLLED_PARAMS


@pytest.mark.parametrize("kind", sorted(REGRESSOR_PARAMS))
def test_regressor_table_matches_scikit_learn(kind: str) -> None:
    estimator = make_estimator(kind, {}, 0, "regression")
    assert type(estimator).__name__.endswith(("Regressor", "Ridge"))
    assert REGRESSOR_PARAMS[kind] == set(estimator.get_params()) - CONTROLLED_PARAMS - {"copy_X"}


def test_param_grid_checks() -> None:
    check_param_grid("random_forest", {"max_depth": [None, 3]})
    with pytest.raises(ConfigError, match="no tunable hyper-parameter 'max_dept'"):
        check_param_grid("random_forest", {"max_dept": [3]})
    with pytest.raises(ConfigError, match="'n_jobs'"):
        check_param_grid("random_forest", {"n_jobs": [4]})
    with pytest.raises(ConfigError, match="empty list"):
        check_param_grid("logistic_regression", {"C": []})


def test_candidate_grid_is_the_cartesian_product() -> None:
    assert candidate_grid({}) == [{}]
    grid = candidate_grid({"b": [1, 2], "a": ["x", "y", "z"]})
    assert len(grid) == 6 and {"a": "z", "b": 2} in grid


def test_pipeline_carries_preprocessing_and_tolerates_unseen_categories_and_nans() -> None:
    frame = generate_demo(2_000, seed=1)
    spec = infer_features(frame, "churned")
    model = fit_pipeline(frame, spec, "random_forest", {"n_estimators": 20}, seed=0)
    fresh = generate_demo(50, seed=9).drop(columns=["churned"])
    fresh.loc[:4, "region"] = "atlantis"  # never seen in training
    fresh.loc[5:9, "age"] = np.nan
    proba = model.predict_proba(fresh[spec.features])
    assert proba.shape == (50, 2) and np.isfinite(proba).all()
    assert model.named_steps["model"].n_jobs == 1  # single-threaded for serving


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.integration) if k == "hist_gradient_boosting"
                                  else k for k in sorted(TUNABLE_PARAMS)])  # HGB: ~6 s
def test_every_estimator_trains_on_mixed_data(kind: str) -> None:
    frame = generate_demo(1_500, seed=2)
    spec = infer_features(frame, "churned")
    score = cross_validate_candidate(frame, spec, kind, {}, folds=3, seed=0)
    assert score.folds == 3 and len(score.fold_metrics) == 3
    assert 0.6 < score.mean["roc_auc"] <= 1.0


def test_select_best_respects_metric_direction() -> None:
    a = CandidateScore(0, {"x": 1}, {"roc_auc": 0.8, "log_loss": 0.5}, {}, 3)
    b = CandidateScore(1, {"x": 2}, {"roc_auc": 0.9, "log_loss": 0.6}, {}, 3)
    assert select_best([a, b], "roc_auc") is b
    assert select_best([a, b], "log_loss") is a
    tie = CandidateScore(2, {"x": 3}, {"roc_auc": 0.9, "log_loss": 0.6}, {}, 3)
    assert select_best([a, b, tie], "roc_auc") is b  # earliest wins a tie


def test_split_matches_scikit_learn_and_can_stratify() -> None:
    frame = generate_demo(1_000, seed=3)
    train, test = split_train_test(frame, "churned", 0.3, 42, stratify=False)
    assert (len(train), len(test)) == (700, 300)
    assert set(train.index).isdisjoint(test.index)
    strat_train, strat_test = split_train_test(frame, "churned", 0.3, 42, stratify=True)
    assert abs(strat_train["churned"].mean() - strat_test["churned"].mean()) < 0.01


def test_build_pipeline_uses_declared_columns_only() -> None:
    frame = generate_demo(300, seed=1)
    spec = infer_features(frame, "churned")
    pipe = build_pipeline(spec, "logistic_regression", {"C": 0.5}, seed=0)
    assert [name for name, _, _ in pipe.named_steps["pre"].transformers] == ["num", "cat"]
    assert pipe.named_steps["model"].C == 0.5


def test_candidate_grid_follows_parameter_grid_order() -> None:
    from sklearn.model_selection import ParameterGrid

    grid = {"max_depth": [None, 12], "min_samples_leaf": [1, 4], "bootstrap": [True]}
    assert candidate_grid(grid) == list(ParameterGrid(grid))
    assert candidate_grid(grid)[:2] == [{"bootstrap": True, "max_depth": None, "min_samples_leaf": 1},
                                        {"bootstrap": True, "max_depth": None, "min_samples_leaf": 4}]


def test_candidates_table_and_training_metrics() -> None:
    from tasks.model.train import candidates_table, training_metrics

    scores = [CandidateScore(index=i, params={"max_depth": d}, mean={"roc_auc": m, "accuracy": 0.9},
                             std={"roc_auc": 0.01, "accuracy": 0.02}, folds=3, seconds=1.234)
              for i, (d, m) in enumerate([(None, 0.81234), (8, 0.85)])]
    assert candidates_table(scores, "roc_auc", selected=1) == [
        {"candidate": 0, "params": '{"max_depth": null}', "cv roc_auc mean": 0.8123, "cv roc_auc std": 0.01,
         "seconds": 1.2, "selected": False},
        {"candidate": 1, "params": '{"max_depth": 8}', "cv roc_auc mean": 0.85, "cv roc_auc std": 0.01,
         "seconds": 1.2, "selected": True}]
    assert training_metrics(scores[1], {"roc_auc": 0.8}, 70, 30) == {
        "cv_roc_auc": 0.85, "cv_accuracy": 0.9, "test_roc_auc": 0.8, "rows_train": 70, "rows_test": 30}


def test_cv_sample_is_stratified_capped_and_leaves_small_frames_alone() -> None:
    frame = generate_demo(5_000, seed=3)
    assert cv_sample(frame, "churned", None, 0) is frame
    assert cv_sample(frame, "churned", 5_000, 0) is frame
    sample = cv_sample(frame, "churned", 1_000, 0)
    assert len(sample) == 1_000 and sample.index.isin(frame.index).all() and not sample.index.duplicated().any()
    assert abs(sample["churned"].mean() - frame["churned"].mean()) < 0.002  # class shares kept
    assert cv_sample(frame, "churned", 1_000, 0).index.equals(sample.index)  # seeded
    rare = frame.assign(churned=np.r_[np.zeros(len(frame) - 1), 2.0])  # a class of one row cannot be stratified
    assert len(cv_sample(rare, "churned", 1_000, 0)) == 1_000


def test_a_grid_smaller_than_the_workers_gets_the_spare_cores_with_the_same_scores() -> None:
    from tasks.model.train import candidate_threads

    assert [candidate_threads(2, n) for n in (1, 2, 3)] == [2, 1, 1] and candidate_threads(8, 3) == 2
    frame = generate_demo(1_500, seed=4)
    spec = infer_features(frame, "churned")
    params = {"n_estimators": 20, "min_samples_leaf": 3}
    one, two = (cross_validate_candidate(frame, spec, "random_forest", params, 3, 0, n_jobs=n) for n in (1, 2))
    assert one.fold_metrics == two.fold_metrics
