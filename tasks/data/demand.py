"""A regression demo world: daily unit sales of a small grocery chain, one row per (store, product) and day.

The worked "bring your own model" example (examples/demand/) trains on it: 12 stores in 3 regions, 6 product
categories, a shelf price that moves with promotions and markdowns, a promo flag, the day's temperature at the
store, the weekday; the label `units_sold` (a count, stored as float) comes from a non-linear demand curve: price
elasticity per category, promo lift, a weekday pattern, temperature for ice cream, drinks and soup, store size,
product popularity, and gamma-Poisson noise (its spread grows with the expected sales).

From `drift_from_day` on the world changes in three ways a retrain can learn and a stale model cannot: drinks and
snacks cost 25% more (a price change), promotions come three times as often, deeper but without their old lift
(a new promo regime), and a competitor opens in the south (fewer sales there, shoppers more price sensitive).

Every day is drawn from its own seed (seed, calendar date), so a day is the same whichever function draws it and
whatever the other days are. Plain functions, no Prefect: `write_demand_world` writes the landing folders the
example's catalogue entry reads (features every night, labels in a separate file keyed by `row_id`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


DEMAND_LABEL = "units_sold"
DEMAND_ID = "row_id"
DEMAND_TIME = "day"
DEMAND_CATEGORICAL = ("store", "region", "category", "product")
DEMAND_NUMERIC = ("base_price", "price", "promo", "temperature", "day_of_week")
DEMAND_FEATURES = (*DEMAND_CATEGORICAL, *DEMAND_NUMERIC)
DEMAND_COLUMNS = (DEMAND_ID, DEMAND_TIME, *DEMAND_FEATURES)

REGIONS = ("north", "central", "south")
STORES_PER_REGION = 4
PRODUCTS_PER_CATEGORY = 10
DRIFT_STORY = ("drinks and snacks 25% dearer; promotions three times as often, deeper, without their old lift; "
               "a competitor opens in the south")


@dataclass(frozen=True)
class _Category:
    """How one product category sells: price level, price elasticity, promo lift, temperature response."""

    name: str
    median_price: float
    elasticity: float
    promo_lift: float  # extra lift of a promotion beyond its lower price (display, advertising)
    level: float  # sales level of a typical product at the median price
    temperature: str  # "warm" sells more when warm, "cold" when cold, "" indifferent


_CATEGORIES = (
    _Category("beverages", 1.9, 1.6, 1.35, 1.4, "warm"),
    _Category("ice_cream", 4.2, 2.1, 1.50, 0.9, "ice"),
    _Category("soup", 2.6, 0.9, 1.20, 0.8, "cold"),
    _Category("snacks", 2.3, 1.8, 1.45, 1.2, ""),
    _Category("dairy", 1.3, 0.6, 1.15, 2.2, ""),
    _Category("household", 5.5, 1.1, 1.25, 0.6, ""),
)
CATEGORIES = tuple(c.name for c in _CATEGORIES)
_PRICE_CHANGED = ("beverages", "snacks")  # +25% from the drift day on

_CLIMATE = {"north": 7.0, "central": 12.0, "south": 18.0}  # yearly mean temperature, deg C
_REGION_DEMAND = {"north": 0.9, "central": 1.0, "south": 1.1}
_WEEKDAY = np.array([0.86, 0.90, 0.95, 1.00, 1.18, 1.38, 0.74])  # Monday .. Sunday
_WEEKEND_HEAVY = {"household": 1.25, "beverages": 1.15}  # extra Saturday lift of these categories
_LEVEL_ELASTICITY = 0.8  # how much less a product sells that is dearer than its category's usual price
_NOISE_SHAPE = 12.0  # gamma-Poisson noise: variance = mean + mean^2 / shape


@dataclass(frozen=True)
class _Regime:
    """The world's rules on one day: the usual ones, or the drifted ones."""

    promo_rate: float = 0.10
    discount: tuple[float, float] = (0.10, 0.35)
    promo_lift_scale: float = 1.0  # 0 = a promotion adds nothing beyond its price
    price_change: float = 1.0
    south_demand: float = 1.0
    south_elasticity: float = 1.0


USUAL = _Regime()
DRIFTED = _Regime(promo_rate=0.30, discount=(0.20, 0.45), promo_lift_scale=0.0, price_change=1.25,
                  south_demand=0.6, south_elasticity=1.4)


@dataclass(frozen=True)
class _World:
    """The chain's fixed parts for a seed: stores and the product range."""

    stores: tuple[str, ...]
    store_region: tuple[str, ...]
    store_size: np.ndarray
    store_price_index: np.ndarray
    store_climate: np.ndarray
    products: tuple[str, ...]
    product_category: np.ndarray  # index into _CATEGORIES
    product_price: np.ndarray  # regular price before the store's price index
    product_popularity: np.ndarray


@lru_cache(maxsize=8)
def _world(seed: int, per_category: int) -> _World:
    """Stores and products; product j of a category is the same product whatever `per_category` is."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23, 0]))
    n_stores = len(REGIONS) * STORES_PER_REGION
    stores = tuple(f"s{i + 1:02d}" for i in range(n_stores))
    regions = tuple(REGIONS[i // STORES_PER_REGION] for i in range(n_stores))
    # Store sizes spread evenly over a log-normal's quantiles (shuffled), so every seed has small and big stores.
    quantiles = NormalDist().inv_cdf
    size = np.round(np.exp(0.5 * rng.permutation([quantiles((i + 0.5) / n_stores) for i in range(n_stores)])), 3)
    price_index = np.round(rng.uniform(0.92, 1.10, n_stores), 3)
    climate = np.array([_CLIMATE[r] for r in regions]) + rng.normal(0.0, 1.2, n_stores)
    products, category, price, popularity = [], [], [], []
    for ci, cat in enumerate(_CATEGORIES):
        for j in range(per_category):
            prng = np.random.default_rng(np.random.SeedSequence([seed, 23, 1, ci, j]))
            products.append(f"{cat.name[:3]}-{j + 1:03d}")
            category.append(ci)
            price.append(round(cat.median_price * float(prng.lognormal(0.0, 0.35)), 2))
            popularity.append(float(prng.lognormal(0.0, 0.6)))
    return _World(stores, regions, size, price_index, climate, tuple(products), np.array(category),
                  np.array(price), np.array(popularity))


def _per_category(rows: int) -> int:
    n_stores = len(REGIONS) * STORES_PER_REGION
    return max(PRODUCTS_PER_CATEGORY, -(-rows // (n_stores * len(_CATEGORIES))))


def _temperature_effect(kind: str, temp: np.ndarray) -> np.ndarray:
    """Sales multiplier of the temperature: ice cream on an S-curve, drinks above 15 deg C, soup when cold."""
    if kind == "ice":
        return 0.35 + 1.9 / (1.0 + np.exp(-(temp - 20.0) / 3.5))
    if kind == "warm":
        return 1.0 + 0.035 * np.maximum(temp - 15.0, 0.0) ** 1.2
    if kind == "cold":
        return np.exp(-0.045 * (temp - 12.0)).clip(0.4, 2.2)
    return np.ones_like(temp)


def demand_day(day: date, rows: int, seed: int = 0, drifted: bool = False) -> pd.DataFrame:
    """One labeled day: `rows` distinct (store, product) rows (the whole range when it fits), every feature, the
    label `units_sold`. Deterministic given (seed, day, rows, drifted); `drifted` draws it under the changed world."""
    import pandas as pd

    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    world = _world(seed, _per_category(rows))
    regime = DRIFTED if drifted else USUAL
    rng = np.random.default_rng(np.random.SeedSequence([seed, 23, 2, day.toordinal()]))
    n_stores, n_products = len(world.stores), len(world.products)
    # The day's draws, always in this order and size, so a drifted day differs only by the drift.
    chosen = np.sort(rng.permutation(n_stores * n_products)[:rows])
    weather = rng.normal(0.0, 3.5, len(REGIONS))
    u_promo, u_depth, u_markdown, u_depth2, u_missing = rng.random((5, len(chosen)))
    gamma = rng.gamma(_NOISE_SHAPE, 1.0 / _NOISE_SHAPE, len(chosen))
    poisson_seed = int(rng.integers(2**32))

    s, p = chosen // n_products, chosen % n_products
    region = np.asarray(world.store_region, dtype=object)[s]
    cat = world.product_category[p]
    cats = np.asarray(CATEGORIES, dtype=object)[cat]
    season = 9.0 * np.sin(2 * np.pi * (day.timetuple().tm_yday - 110) / 365.25)
    region_weather = dict(zip(REGIONS, weather))
    temp = world.store_climate[s] + season + np.array([region_weather[r] for r in region])
    changed = np.isin(cats, _PRICE_CHANGED)
    base_price = np.round(world.product_price[p] * world.store_price_index[s]
                          * np.where(changed, regime.price_change, 1.0), 2)
    promo = u_promo < regime.promo_rate
    lo, hi = regime.discount
    markdown = ~promo & (u_markdown < 0.06)  # an unadvertised clearance markdown now and then
    factor = np.where(promo, 1 - (lo + (hi - lo) * u_depth), np.where(markdown, 1 - (0.05 + 0.1 * u_depth2), 1.0))
    price = np.round(base_price * factor, 2)
    dow = day.weekday()

    median = np.array([c.median_price for c in _CATEGORIES])[cat]
    elasticity = np.array([c.elasticity for c in _CATEGORIES])[cat]
    south = region == "south"
    elasticity = elasticity * np.where(south, regime.south_elasticity, 1.0)
    lift = np.array([c.promo_lift for c in _CATEGORIES])[cat]
    lift = np.where(promo, 1.0 + (lift - 1.0) * regime.promo_lift_scale, 1.0)
    weekday = _WEEKDAY[dow] * np.array([_WEEKEND_HEAVY.get(c, 1.0) if dow == 5 else 1.0 for c in cats])
    weather_effect = np.ones(len(chosen))
    for ci, c in enumerate(_CATEGORIES):
        mask = cat == ci
        weather_effect[mask] = _temperature_effect(c.temperature, temp[mask])
    region_demand = np.array([_REGION_DEMAND[r] for r in region]) * np.where(south, regime.south_demand, 1.0)
    # Shoppers answer the price against the product's regular price (elasticity) and, more mildly, a dear product
    # against its category's usual price level.
    price_effect = (price / base_price) ** (-elasticity) * (base_price / median) ** (-_LEVEL_ELASTICITY)
    expected = (24.0 * world.store_size[s] * world.product_popularity[p] * np.array([c.level for c in _CATEGORIES])[cat]
                * price_effect * lift * weekday * weather_effect * region_demand)
    units = np.random.default_rng(poisson_seed).poisson(expected * gamma).astype(np.float64)

    temperature = np.round(temp, 1)
    temperature[u_missing < 0.01] = np.nan  # a missing reading now and then
    frame = pd.DataFrame({
        DEMAND_ID: [f"{day:%Y%m%d}-{world.stores[i]}-{world.products[j]}" for i, j in zip(s, p)],
        DEMAND_TIME: pd.Series(pd.Timestamp(day), index=range(len(chosen)), dtype="datetime64[ns]"),
        "store": np.asarray(world.stores, dtype=object)[s],
        "region": region,
        "category": cats,
        "product": np.asarray(world.products, dtype=object)[p],
        "base_price": base_price,
        "price": price,
        "promo": promo.astype(np.int64),
        "temperature": temperature,
        "day_of_week": np.full(len(chosen), dow, dtype=np.int64),
        DEMAND_LABEL: units,
    })
    return frame


def drifted_on(day: date, start: date, drift_from_day: int | None) -> bool:
    """Whether `day` is drawn from the drifted world: day index (0 = `start`) at or after `drift_from_day`."""
    return drift_from_day is not None and (day - start).days >= drift_from_day


def demand_days(start: date, days: int, rows_per_day: int, drift_from_day: int | None = None,
                seed: int = 0) -> pd.DataFrame:
    """`days` labeled days from `start` in one frame (the world drifts from day index `drift_from_day` on)."""
    import pandas as pd

    frames = [demand_day(d, rows_per_day, seed, drifted_on(d, start, drift_from_day))
              for d in (start + timedelta(days=i) for i in range(days))]
    return pd.concat(frames, ignore_index=True) if frames else demand_day(start, 0, seed)


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)  # a reader never sees half a file


def write_demand_world(root: Path, start: date, days: int, rows_per_day: int, label_lag_days: int = 2,
                       drift_from_day: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Write `days` days from `start` under `root`: `features/{YYYY-MM-DD}.parquet` (row_id, day and the features,
    no label) and `labels/{YYYY-MM-DD}.parquet` (row_id, units_sold). Day D's labels are meant to land on
    D + `label_lag_days`; they are all written now (a night reads the labels whose day + lag it has reached).
    Returns what was written: paths, rows, the drifted days and when each day's labels land."""
    if days < 0 or label_lag_days < 0:
        raise ValueError(f"days and label_lag_days must be >= 0, got {days} and {label_lag_days}")
    root = Path(root)
    features, labels, drifted, land = [], [], [], {}
    rows = 0
    for i in range(days):
        day = start + timedelta(days=i)
        is_drifted = drifted_on(day, start, drift_from_day)
        frame = demand_day(day, rows_per_day, seed, is_drifted)
        feature_path = root / "features" / f"{day:%Y-%m-%d}.parquet"
        label_path = root / "labels" / f"{day:%Y-%m-%d}.parquet"
        _write(frame[list(DEMAND_COLUMNS)], feature_path)
        _write(frame[[DEMAND_ID, DEMAND_LABEL]], label_path)
        features.append(feature_path)
        labels.append(label_path)
        land[day] = day + timedelta(days=label_lag_days)
        rows += len(frame)
        if is_drifted:
            drifted.append(day)
    return {"root": root, "days": [start + timedelta(days=i) for i in range(days)], "rows": rows,
            "rows_per_day": rows_per_day, "features": features, "labels": labels, "labels_land": land,
            "drifted_days": drifted, "drift": DRIFT_STORY if drifted else None, "label": DEMAND_LABEL,
            "key": DEMAND_ID, "seed": seed}
