"""DemandFeatures: price and calendar features a tree model cannot build by itself, learned from the training rows.

It keeps every column it is given and adds:

- `log_price`: the log of the shelf price,
- `relative_price`: the price over its category's median price in the training rows (an unseen category uses the
  median of all prices), so "cheap for a drink" and "cheap for a detergent" mean the same,
- `discount`: 1 - price / base_price (0 without a promotion or markdown),
- `weekday_sin`, `weekday_cos`: the weekday (0 = Monday) on a circle, so Sunday sits next to Monday.

Fitted state is plain Python (a dict of floats, a float, a list of names): skops stores it without any type of
its own beyond this class, which the catalogue trusts by name (`estimator.trusted_types`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

ADDED = ("log_price", "relative_price", "discount", "weekday_sin", "weekday_cos")


class DemandFeatures(BaseEstimator, TransformerMixin):
    """Add price and calendar features to the raw feature frame (a pandas DataFrame); every input column is kept."""

    def __init__(self, price: str = "price", base_price: str = "base_price", category: str = "category",
                 weekday: str = "day_of_week") -> None:
        self.price = price
        self.base_price = base_price
        self.category = category
        self.weekday = weekday

    def fit(self, X: pd.DataFrame, y: object = None) -> DemandFeatures:
        """Learn each category's median price (and the overall one for categories never seen)."""
        frame = self._frame(X)
        prices = pd.to_numeric(frame[self.price], errors="coerce")
        overall = float(prices.median()) if prices.notna().any() else 1.0
        by_category = prices.groupby(frame[self.category].astype(str)).median()
        self.category_median_ = {str(k): float(v) for k, v in by_category.items() if np.isfinite(v) and v > 0}
        self.overall_median_ = overall if np.isfinite(overall) and overall > 0 else 1.0
        self.feature_names_in_ = np.asarray([str(c) for c in frame.columns], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The input columns, then the added ones (ADDED), as a DataFrame."""
        check_is_fitted(self, "category_median_")
        frame = self._frame(X).copy()
        price = pd.to_numeric(frame[self.price], errors="coerce").astype(float)
        base = pd.to_numeric(frame[self.base_price], errors="coerce").astype(float)
        median = frame[self.category].astype(str).map(self.category_median_).astype(float)
        median = median.fillna(self.overall_median_)
        weekday = pd.to_numeric(frame[self.weekday], errors="coerce").astype(float)
        angle = 2.0 * np.pi * weekday / 7.0
        frame["log_price"] = np.log(price.clip(lower=0.01))
        frame["relative_price"] = price / median
        frame["discount"] = (1.0 - price / base.where(base > 0)).clip(lower=0.0)
        frame["weekday_sin"] = np.sin(angle)
        frame["weekday_cos"] = np.cos(angle)
        return frame

    def get_feature_names_out(self, input_features: object = None) -> np.ndarray:
        """Input column names (as fitted, or `input_features`), then the added ones."""
        check_is_fitted(self, "category_median_")
        names = list(self.feature_names_in_) if input_features is None else [str(c) for c in input_features]
        return np.asarray(names + [c for c in ADDED if c not in names], dtype=object)

    def _frame(self, X: object) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise TypeError(f"DemandFeatures takes a pandas DataFrame with named columns, got {type(X).__name__}")
        missing = [c for c in (self.price, self.base_price, self.category, self.weekday) if c not in X.columns]
        if missing:
            got = ", ".join(map(str, X.columns))
            raise ValueError(f"DemandFeatures needs the column(s) {', '.join(missing)}; got {got}")
        return X
