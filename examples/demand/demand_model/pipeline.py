"""make_pipeline(): the unfitted pipeline nightshift fits every time it trains a challenger.

    features  DemandFeatures: log price, price relative to its category, discount, weekday on a circle
    pre       ColumnTransformer: one-hot for the categorical columns, the numbers passed through
    model     HistGradientBoostingRegressor with a Poisson loss (units sold are counts)

It takes the raw feature frame as it lands (store, region, category, product, base_price, price, promo,
temperature, day_of_week; any other column, such as row_id or day, is dropped by `pre`). The catalogue's grid
names parameters the way set_params does: model__max_depth, model__learning_rate, features__category, ...
"""

from __future__ import annotations

from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from demand_model.features import ADDED, DemandFeatures

CATEGORICAL = ["store", "region", "category", "product"]
NUMERIC = ["base_price", "price", "promo", "temperature", "day_of_week", *ADDED]


def make_pipeline(seed: int = 0) -> Pipeline:
    """A new, unfitted pipeline (seeded by `seed`); nightshift calls it once per candidate of the grid."""
    pre = ColumnTransformer(
        [("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), CATEGORICAL),
         ("numeric", "passthrough", NUMERIC)],
        remainder="drop", verbose_feature_names_out=False)
    model = HistGradientBoostingRegressor(loss="poisson", max_iter=200, max_depth=6, learning_rate=0.1,
                                          min_samples_leaf=20, l2_regularization=1.0, early_stopping=False,
                                          random_state=seed)
    return Pipeline([("features", DemandFeatures()), ("pre", pre), ("model", model)])
