"""demand_model: the team's own scikit-learn pipeline for daily unit sales, as nightshift trains and serves it.

nightshift imports `demand_model.pipeline:make_pipeline` (the catalogue's `estimator.factory`), fits what it returns
on the raw feature columns, and stores the fitted pipeline with skops; `demand_model.features.DemandFeatures` is the
one class of ours inside it, so the catalogue lists it in `estimator.trusted_types`.
"""

from demand_model.features import DemandFeatures
from demand_model.pipeline import make_pipeline

__all__ = ["DemandFeatures", "make_pipeline"]
