"""A team's pipeline factory: imported from where the catalogue says, called, and refused with what is wrong."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nightshift.errors import ConfigError
from tasks.catalogue.config import EstimatorParams
from tasks.data.datasets import FeatureSpec
from tasks.model.factory import check_factory
from tasks.model.train import cross_validate_candidate, fit_pipeline

FACTORIES = '''
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC


class Doubler(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        self.columns_ = list(X.columns)
        return self

    def transform(self, X):
        return X[self.columns_].to_numpy(dtype=float) * 2.0


def regressor(seed=0):
    return Pipeline([("double", Doubler()), ("model", Ridge(alpha=1.0, random_state=seed))])


def classifier():
    return Pipeline([("double", Doubler()), ("model", RandomForestClassifier(n_estimators=5, random_state=0))])


def no_proba():
    return Pipeline([("double", Doubler()), ("model", SVC())])


def fitted():
    import numpy as np
    return Ridge().fit(np.eye(3), [1.0, 2.0, 3.0])


def not_an_estimator():
    return {"model": "ridge"}


def raises():
    raise RuntimeError("no GPU here")


NOT_A_FUNCTION = 42
'''


@pytest.fixture()
def code(tmp_path: Path):
    package = tmp_path / "team_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "factories.py").write_text(textwrap.dedent(FACTORIES))
    yield str(tmp_path)
    for name in [m for m in sys.modules if m.startswith("team_models")]:
        del sys.modules[name]
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


@pytest.mark.parametrize(("spec", "task", "grid", "message"), [
    ("team_models.missing:make", "regression", {}, "module 'team_models.missing' is not importable under code_path"),
    ("team_models.factories:nope", "regression", {}, "module 'team_models.factories' has no 'nope'"),
    ("team_models.factories:NOT_A_FUNCTION", "regression", {}, "'NOT_A_FUNCTION' is a int, not a function"),
    ("team_models.factories:fitted", "regression", {}, "returned a fitted Ridge: return an unfitted one"),
    ("team_models.factories:not_an_estimator", "regression", {}, "returned a dict, not a scikit-learn estimator"),
    ("team_models.factories:raises", "regression", {}, "raised RuntimeError: no GPU here"),
    ("team_models.factories:no_proba", "classification", {}, "without predict_proba"),
    ("team_models.factories:regressor", "classification", {}, "returned a regressor (Pipeline); set task: regression"),
    ("team_models.factories:classifier", "regression", {}, "returned a classifier (Pipeline) for task: regression"),
    ("team_models.factories:regressor", "regression", {"model__alpah": [1.0]}, "'model__alpah' is not a parameter"),
])
def test_a_bad_factory_is_refused_saying_what_is_wrong(code: str, spec: str, task: str, grid: dict,
                                                       message: str) -> None:
    with pytest.raises(ConfigError, match=None) as raised:
        check_factory(spec, code, task, grid)  # type: ignore[arg-type]
    assert message in str(raised.value)


def test_without_code_path_the_module_must_be_installed(code: str) -> None:
    with pytest.raises(ConfigError, match="is not importable in this environment"):
        check_factory("team_models_not_installed.factories:regressor", None, "regression", {})


def test_a_good_factory_is_tuned_with_its_own_set_params_names_and_fitted(code: str) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["y"] = 3 * frame["a"] - frame["b"] + rng.normal(scale=0.1, size=300)
    spec = FeatureSpec(label="y", numeric=("a", "b"), categorical=())
    estimator = EstimatorParams(factory="team_models.factories:regressor", code_path=code,
                                param_grid={"model__alpha": [0.1, 100.0]})
    assert check_factory(estimator.factory, code, "regression", estimator.param_grid) is not None
    small, large = (cross_validate_candidate(frame, spec, estimator, {"model__alpha": a}, 3, 0, task="regression")
                    for a in (0.1, 100.0))
    assert set(small.mean) == {"rmse", "mae", "r2"} and small.mean["rmse"] < large.mean["rmse"]
    model = fit_pipeline(frame, spec, estimator, {"model__alpha": 0.1}, 0, "regression")
    assert model.get_params()["model__alpha"] == 0.1 and type(model.named_steps["double"]).__name__ == "Doubler"
    assert np.corrcoef(model.predict(frame[["a", "b"]]), frame["y"])[0, 1] > 0.99


def test_a_code_path_module_shadowed_by_another_is_refused(code: str, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    (other / "team_models").mkdir(parents=True)
    (other / "team_models" / "__init__.py").write_text("")
    (other / "team_models" / "factories.py").write_text(textwrap.dedent(FACTORIES))
    check_factory("team_models.factories:regressor", code, "regression", {})  # imported from `code` now
    with pytest.raises(ConfigError, match="not from code_path"):
        check_factory("team_models.factories:regressor", str(other), "regression", {})
