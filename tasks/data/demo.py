"""Bundled datasets: scikit-learn's iris table and the demo churn stream, generated with drift knobs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import pandas as pd

    from tasks.catalogue.schema import CatalogueModel


IRIS_LABEL = "species"
DEMO_LABEL = "churned"
DEMO_DATE = "event_date"
DEMO_START = date(2026, 1, 1)


# Rows are generated in fixed blocks, each from its own seed, so any prefix of the stream is the
# same whatever size is asked for, and huge sizes can be produced one block at a time.
DEMO_BLOCK_ROWS = 100_000


class DemoDrift(BaseModel):
    """Drift injected into one demo day: covariate (feature) shift, category-mix change, concept change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    covariate_shift: float = Field(
        0.0, ge=-5.0, le=5.0, title="Covariate shift",
        description="Mean shift of the drifted numeric columns, in their standard deviations.",
    )
    covariate_scale: float = Field(
        1.0, gt=0.0, le=10.0, title="Covariate scale",
        description="Factor applied to the spread of the drifted numeric columns (1 = unchanged).",
    )
    drifted_columns: tuple[str, ...] = Field(
        ("monthly_spend", "sessions_last_30d", "days_since_last_login"), title="Drifted columns",
        description="Numeric columns that the covariate shift/scale applies to.",
    )
    category_mix: float = Field(
        0.0, ge=0.0, le=1.0, title="Category mix change",
        description="0 = usual category frequencies, 1 = fully moved to a different mix (including a new, unseen region).",
    )
    concept: float = Field(
        0.0, ge=0.0, le=1.0, title="Concept drift",
        description="0 = usual label relationship, 1 = a different relationship between features and churn.",
    )


@dataclass(frozen=True)
class _Numeric:
    """One numeric demo column: distribution `kind` with parameters a and b, missing share, clip range."""

    name: str
    kind: str
    a: float
    b: float = 0.0
    missing: float = 0.0
    clip: tuple[float, float] | None = None


# A churn-like customer table: 20 numeric features with realistic shapes, 5 categorical ones.
_NUMERIC: tuple[_Numeric, ...] = (
    _Numeric("age", "normal", 41, 12, clip=(18, 90)),
    _Numeric("tenure_months", "gamma", 2.0, 14.0, clip=(0, 240)),
    _Numeric("monthly_spend", "lognormal", 4.0, 0.55),
    _Numeric("sessions_last_30d", "poisson", 18),
    _Numeric("avg_session_minutes", "gamma", 3.0, 4.0, missing=0.03),
    _Numeric("support_tickets_90d", "poisson", 0.8),
    _Numeric("days_since_last_login", "exponential", 6.0),
    _Numeric("discount_rate", "beta", 2.0, 12.0),
    _Numeric("payment_delays_12m", "poisson", 0.6),
    _Numeric("pages_per_session", "gamma", 4.0, 1.5),
    _Numeric("cart_abandon_rate", "beta", 3.0, 5.0),
    _Numeric("referrals", "poisson", 0.4),
    _Numeric("account_balance", "normal", 120, 80),
    _Numeric("credit_score", "normal", 680, 60, missing=0.02, clip=(300, 850)),
    _Numeric("device_count", "poisson1", 1.2),
    _Numeric("email_open_rate", "beta", 2.0, 5.0),
    _Numeric("avg_order_value", "lognormal", 3.6, 0.45),
    _Numeric("orders_last_90d", "poisson", 3.0),
    _Numeric("returns_last_90d", "poisson", 0.3),
    _Numeric("nps_score", "nps", 7.0),
)
_CATEGORICAL: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "plan": (("basic", "standard", "premium", "enterprise"), (0.45, 0.32, 0.17, 0.06)),
    "region": (("north", "south", "east", "west", "central"), (0.22, 0.24, 0.18, 0.21, 0.15)),
    "channel": (("web", "app", "store", "partner"), (0.41, 0.35, 0.16, 0.08)),
    "device_os": (("android", "ios", "windows", "macos", "linux"), (0.38, 0.30, 0.20, 0.09, 0.03)),
    "payment_method": (("card", "paypal", "bank_transfer", "invoice"), (0.55, 0.22, 0.15, 0.08)),
}


# Where category_mix moves the frequencies to; "international" is a region the reference never saw.
_SHIFTED_MIX: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "plan": (("basic", "standard", "premium", "enterprise"), (0.15, 0.20, 0.35, 0.30)),
    "region": (("north", "south", "east", "west", "central", "international"), (0.10, 0.10, 0.10, 0.10, 0.10, 0.50)),
    "channel": (("web", "app", "store", "partner"), (0.20, 0.60, 0.05, 0.15)),
    "device_os": (("android", "ios", "windows", "macos", "linux"), (0.38, 0.30, 0.20, 0.09, 0.03)),
    "payment_method": (("card", "paypal", "bank_transfer", "invoice"), (0.55, 0.22, 0.15, 0.08)),
}
DEMO_NUMERIC = tuple(n.name for n in _NUMERIC)
DEMO_CATEGORICAL = tuple(_CATEGORICAL)


def load_iris() -> pd.DataFrame:
    """The iris table shipped inside scikit-learn (no download): four measurements and `species`."""
    import pandas as pd
    from sklearn.datasets import load_iris as sk_load_iris

    bunch = sk_load_iris(as_frame=True)
    frame = bunch.data.rename(columns=lambda c: c.replace(" (cm)", "_cm").replace(" ", "_"))
    frame[IRIS_LABEL] = pd.Categorical.from_codes(bunch.target, bunch.target_names).astype(str)
    return frame


def _draw_numeric(spec: _Numeric, rng: np.random.Generator, n: int) -> np.ndarray:
    if spec.kind == "normal":
        values = rng.normal(spec.a, spec.b, n)
    elif spec.kind == "gamma":
        values = rng.gamma(spec.a, spec.b, n)
    elif spec.kind == "lognormal":
        values = rng.lognormal(spec.a, spec.b, n)
    elif spec.kind == "poisson":
        values = rng.poisson(spec.a, n).astype(float)
    elif spec.kind == "poisson1":
        values = 1.0 + rng.poisson(spec.a, n)
    elif spec.kind == "exponential":
        values = rng.exponential(spec.a, n)
    elif spec.kind == "beta":
        values = rng.beta(spec.a, spec.b, n)
    elif spec.kind == "nps":
        values = np.clip(np.round(rng.normal(spec.a, 2.2, n)), 0, 10)
    else:  # pragma: no cover - table above is fixed
        raise ValueError(spec.kind)
    if spec.clip is not None:
        values = np.clip(values, *spec.clip)
    return values.astype(np.float64)


def _churn_logit(frame: pd.DataFrame, concept: float) -> np.ndarray:
    """Log-odds of churn; `concept` blends towards a different relationship."""

    def z(col: str, mean: float, std: float) -> np.ndarray:
        return (frame[col].fillna(mean).to_numpy() - mean) / std

    plan = frame["plan"].to_numpy()
    channel = frame["channel"].to_numpy()
    usual = (
        -1.35
        - 0.85 * z("tenure_months", 28, 20)
        + 0.70 * z("days_since_last_login", 6, 6)
        + 0.55 * z("support_tickets_90d", 0.8, 0.9)
        + 0.50 * z("payment_delays_12m", 0.6, 0.8)
        - 0.45 * z("sessions_last_30d", 18, 4.2)
        - 0.35 * z("nps_score", 7, 2.2)
        + 0.30 * z("cart_abandon_rate", 0.375, 0.16)
        - 0.25 * z("orders_last_90d", 3, 1.7)
        + 0.40 * (plan == "basic")
        - 0.50 * (plan == "enterprise")
        + 0.25 * (channel == "partner")
        + 0.35 * z("monthly_spend", 63, 38) * z("discount_rate", 0.14, 0.09)
    )
    if concept == 0:
        return usual
    changed = (
        -1.35
        + 0.80 * z("tenure_months", 28, 20)
        - 0.60 * z("days_since_last_login", 6, 6)
        + 0.90 * z("monthly_spend", 63, 38)
        + 0.60 * z("credit_score", 680, 60)
        - 0.40 * z("email_open_rate", 0.29, 0.16)
        + 0.60 * (plan == "premium")
        - 0.30 * (channel == "app")
    )
    return (1.0 - concept) * usual + concept * changed


@lru_cache(maxsize=1)
def _reference_stats() -> dict[str, tuple[float, float]]:
    """Mean and std of each numeric column on undrifted data: fixed units for the covariate shift."""
    rng = np.random.default_rng(0)
    return {spec.name: (float(v.mean()), float(v.std() or 1.0))
            for spec in _NUMERIC for v in [_draw_numeric(spec, rng, 50_000)]}


def _demo_block(seed: int, day: int, block: int, n: int, drift: DemoDrift) -> pd.DataFrame:
    import pandas as pd

    # One stream per column (and for missingness and labels), so the first k rows of a block are
    # the same whatever n is: any prefix of the stream is stable.
    streams = iter(np.random.SeedSequence([seed, day, block]).spawn(2 * len(_NUMERIC) + len(_CATEGORICAL) + 1))
    columns: dict[str, np.ndarray] = {}
    stats = _reference_stats()
    for spec in _NUMERIC:
        values = _draw_numeric(spec, np.random.default_rng(next(streams)), n)
        missing = np.random.default_rng(next(streams)).random(n)
        if spec.name in drift.drifted_columns and (drift.covariate_shift or drift.covariate_scale != 1):
            mean, std = stats[spec.name]
            values = mean + (values - mean) * drift.covariate_scale + drift.covariate_shift * std
            if spec.clip is not None:
                values = np.clip(values, *spec.clip)
        if spec.missing:
            values[missing < spec.missing] = np.nan
        columns[spec.name] = values
    for name, (levels, probs) in _CATEGORICAL.items():
        if drift.category_mix:
            new_levels, new_probs = _SHIFTED_MIX[name]
            base = dict(zip(levels, probs))
            moved = dict(zip(new_levels, new_probs))
            levels = tuple(dict.fromkeys(levels + new_levels))
            probs = tuple((1 - drift.category_mix) * base.get(lv, 0.0) + drift.category_mix * moved.get(lv, 0.0) for lv in levels)
        p = np.asarray(probs, dtype=float)
        codes = np.random.default_rng(next(streams)).choice(len(levels), size=n, p=p / p.sum())
        columns[name] = np.asarray(levels, dtype=object)[codes]
    frame = pd.DataFrame(columns)
    churn_p = 1.0 / (1.0 + np.exp(-_churn_logit(frame, drift.concept)))
    frame[DEMO_LABEL] = (np.random.default_rng(next(streams)).random(n) < churn_p).astype(np.int64)
    frame.insert(0, DEMO_DATE, pd.Series(pd.Timestamp(DEMO_START + timedelta(days=day)), index=frame.index,
                                         dtype="datetime64[ns]"))
    return frame


def iter_demo(rows: int, seed: int = 42, day: int = 0, drift: DemoDrift | None = None) -> Iterator[pd.DataFrame]:
    """Yield the demo stream for one day in blocks (for sizes that should not sit in memory at once)."""
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    drift = drift or DemoDrift()
    done, block = 0, 0
    while done < rows:
        n = min(DEMO_BLOCK_ROWS, rows - done)
        yield _demo_block(seed, day, block, n, drift)
        done += n
        block += 1


def generate_demo(rows: int, seed: int = 42, day: int = 0, drift: DemoDrift | None = None) -> pd.DataFrame:
    """A realistic churn table for one `day`: 20 numeric + 5 categorical features, `churned`, `event_date`."""
    import pandas as pd

    blocks = list(iter_demo(rows, seed=seed, day=day, drift=drift))
    if not blocks:
        return _demo_block(seed, day, 0, 0, drift or DemoDrift())
    return pd.concat(blocks, ignore_index=True) if len(blocks) > 1 else blocks[0]


# --------------------------------------------------------------------------------------------
# A second stream for the catalogue demo: card transactions with a rare fraud label.
# --------------------------------------------------------------------------------------------
FRAUD_LABEL = "is_fraud"
FRAUD_TIME = "event_time"
_MERCHANTS = (("grocery", "fuel", "online_retail", "travel", "electronics", "restaurants", "gaming"),
              (0.26, 0.14, 0.22, 0.07, 0.09, 0.17, 0.05))
_COUNTRIES = (("domestic", "eu", "us", "other"), (0.78, 0.12, 0.06, 0.04))


def generate_fraud(rows: int, seed: int = 42, day: int = 0, shift: float = 0.0) -> pd.DataFrame:
    """Card transactions for one `day`: amount, hour, distance, velocity, merchant, country, `is_fraud` (~4%).

    `shift` (0..1) moves spending online and abroad and makes fraud look different (drift and concept change).
    """
    import pandas as pd

    rng = np.random.default_rng(np.random.SeedSequence([seed, day, 7]))
    merchants, m_probs = _MERCHANTS
    m_probs = np.asarray(m_probs) * (1 - shift) + shift * np.asarray([0.1, 0.05, 0.4, 0.15, 0.15, 0.05, 0.1])
    countries, c_probs = _COUNTRIES
    c_probs = np.asarray(c_probs) * (1 - shift) + shift * np.asarray([0.5, 0.2, 0.15, 0.15])
    frame = pd.DataFrame({
        "amount": np.round(rng.lognormal(3.3 + 0.4 * shift, 1.0, rows), 2),
        "hour": rng.integers(0, 24, rows).astype(float),
        "distance_km": rng.exponential(12.0 * (1 + 2 * shift), rows),
        "txn_last_24h": rng.poisson(2.5, rows).astype(float),
        "account_age_days": rng.gamma(2.0, 400.0, rows),
        "card_present": (rng.random(rows) < 0.55 - 0.3 * shift).astype(float),
        "merchant": np.asarray(merchants, dtype=object)[rng.choice(len(merchants), rows, p=m_probs / m_probs.sum())],
        "country": np.asarray(countries, dtype=object)[rng.choice(len(countries), rows, p=c_probs / c_probs.sum())],
    })
    night = frame["hour"].between(0, 5)
    usual = (-6.0 + 0.7 * np.log1p(frame["amount"]) + 1.4 * night + 0.03 * np.minimum(frame["distance_km"], 100)
             + 0.35 * frame["txn_last_24h"] - 1.4 * frame["card_present"] - 0.001 * frame["account_age_days"]
             + 1.5 * (frame["country"] == "other") + 1.0 * (frame["merchant"] == "electronics"))
    changed = (-4.5 + 1.8 * (frame["merchant"] == "gaming") + 1.6 * (frame["country"] == "us")
               + 0.45 * frame["txn_last_24h"] - 0.8 * night - 0.0008 * frame["account_age_days"])
    logit = ((1 - shift) * usual + shift * changed).to_numpy()
    frame[FRAUD_LABEL] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    start = pd.Timestamp(DEMO_START + timedelta(days=day))
    frame.insert(0, FRAUD_TIME, start + pd.to_timedelta(np.sort(rng.random(rows)) * 86_400, unit="s"))
    frame.insert(0, "transaction_id", [f"t{day:05d}-{i:07d}" for i in range(rows)])
    return frame


def _landing_path(template: str, day: date, state_dir: Path, part: int) -> Path:
    """A concrete file for a (possibly globbing) catalogue template: '*' becomes part-<n>."""
    from tasks.catalogue.schema import render

    return Path(render(template, day, state_dir).replace("*", f"part-{part}"))


def _write(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)  # a reader never sees half a file


def demo_day(label: str, day: date, rows: int, seed: int, drift: DemoDrift | None = None) -> pd.DataFrame:
    """One calendar day of the demo stream a catalogue model's label names (churn or fraud), with ids."""
    index = (day - DEMO_START).days
    if label == FRAUD_LABEL:
        shift = drift.concept if drift else 0.0
        return generate_fraud(rows, seed=seed, day=index, shift=shift)
    if label != DEMO_LABEL:
        raise ValueError(f"no demo stream has label {label!r} (demo labels: {DEMO_LABEL}, {FRAUD_LABEL})")
    frame = generate_demo(rows, seed=seed, day=index, drift=drift)
    frame.insert(0, "customer_id", [f"c{index:05d}-{i:07d}" for i in range(len(frame))])
    return frame


def land_demo_night(model: CatalogueModel, night: date, state_dir: Path, rows: int, seed: int = 42,
                    drift_for: Callable[[date], DemoDrift | None] = lambda day: None, files: int = 2) -> list[Path]:
    """Write what lands for `model` on `night`, where its catalogue entry looks: tonight's rows (split over
    `files` files when its template globs) and, for labels that land apart, the labels of night - lag.

    `drift_for(day)` is the world a day was drawn from, so labels landing days later match their rows.
    """
    frame = demo_day(model.label, night, rows, seed, drift_for(night))
    written = []
    features = frame.drop(columns=[model.label]) if model.labels else frame
    parts = files if "*" in model.features else 1
    for part, chunk in enumerate(np.array_split(np.arange(len(features)), parts)):
        path = _landing_path(model.features, night, state_dir, part)
        _write(features.iloc[chunk], path)
        written.append(path)
    if model.labels is not None:
        day = night - timedelta(days=model.labels.lag_days)
        if day >= DEMO_START:  # the labels of an earlier night, regenerated exactly (same seed, day and drift)
            earlier = demo_day(model.label, day, rows, seed, drift_for(day))
            path = _landing_path(model.labels.source, day, state_dir, 0)
            _write(earlier[[*model.labels.key, model.label]], path)
            written.append(path)
    return written
