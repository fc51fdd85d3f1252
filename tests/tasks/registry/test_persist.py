"""A fitted model must load back from the registry before it is registered: types nobody trusted, and objects skops
cannot store, are refused with their names."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tasks.registry.runs import ModelRefused, persistable_types

MODULE = '''
from sklearn.base import BaseEstimator, TransformerMixin


class Scale(BaseEstimator, TransformerMixin):
    def fit(self, X, y=None):
        self.factor_ = float(abs(X.to_numpy()).max())
        return self

    def transform(self, X):
        return X.to_numpy(dtype=float) / self.factor_
'''


@pytest.fixture()
def fitted(tmp_path: Path):
    (tmp_path / "team_scale.py").write_text(textwrap.dedent(MODULE))
    sys.path.insert(0, str(tmp_path))
    import team_scale
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=50), "b": rng.normal(size=50)})
    model = Pipeline([("scale", team_scale.Scale()), ("model", Ridge())]).fit(X, X["a"] * 2)
    yield model, X
    sys.path.remove(str(tmp_path))
    sys.modules.pop("team_scale", None)


def test_an_untrusted_class_is_refused_by_name_until_the_catalogue_trusts_it(fitted) -> None:
    model, X = fitted
    with pytest.raises(ModelRefused, match="team_scale.Scale. Review them, then list them under "
                                           "estimator.trusted_types"):
        persistable_types(model, [], X.head())
    assert persistable_types(model, ["team_scale.Scale"], X.head()) == ["team_scale.Scale"]


def test_what_skops_cannot_store_is_refused_naming_the_model() -> None:
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    X = pd.DataFrame({"a": np.arange(20.0), "b": np.arange(20.0) ** 0.5})
    model = Pipeline([("log", FunctionTransformer(lambda x: np.log1p(x))), ("model", Ridge())]).fit(X, X["a"])
    with pytest.raises(ModelRefused, match="not registered: the fitted Pipeline"):
        persistable_types(model, ["builtins.function"], X.head())
