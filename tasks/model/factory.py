"""A team's own pipeline: `estimator.factory: "package.module:function"` imported from an installed package or
from the folder the catalogue names (`estimator.code_path`, nowhere else), called, and checked before any work: an
unfitted scikit-learn estimator whose grid names are its own `set_params` names, with `predict_proba` when it
classifies."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from prefect import task
from prefect.cache_policies import NO_CACHE

from nightshift.errors import ConfigError
from tasks.catalogue.config import ParamValue, Task


def allow_code_path(code_path: str, what: str) -> Path:
    """Make a catalogue-named folder importable (the factory's package, and the classes a fitted pipeline holds when
    the model server loads it); the only place user code is imported from besides installed packages."""
    root = Path(code_path).resolve()
    if not root.is_dir():
        raise ConfigError(f"{what}: code_path {code_path} is not a folder.")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
        importlib.invalidate_caches()
    return root


def check_code_path_named(code_path: str, catalogue_path: Path) -> None:
    """A training run's code_path must be one the catalogue names: a flow parameter (a Prefect UI form) never makes
    a folder of its own choosing importable."""
    from tasks.catalogue.schema import load_catalogue

    named = {Path(m.estimator.code_path).resolve() for m in load_catalogue(catalogue_path).models
             if m.estimator.code_path} if catalogue_path.is_file() else set()
    if Path(code_path).resolve() not in named:
        raise ConfigError(f"code_path {code_path} is not named by any model of the catalogue ({catalogue_path}): "
                          "user code is imported only from where the catalogue says, or from installed packages.")


def _import(module_name: str, spec: str, code_path: str | None) -> Any:
    """The factory's module, from `code_path` when the catalogue names one (and only from there)."""
    root = allow_code_path(code_path, f"factory '{spec}'") if code_path else None
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = f"under code_path {code_path}" if code_path else "in this environment"
        raise ConfigError(f"factory '{spec}': module '{module_name}' is not importable {where} ({exc}); install "
                          "its package where the flows and the model server run, or set estimator.code_path.") from None
    except Exception as exc:  # the user's module failed while importing: say where
        raise ConfigError(f"factory '{spec}': importing '{module_name}' failed: {type(exc).__name__}: {exc}") from None
    origin = getattr(module, "__file__", None)
    if root is not None and (origin is None or not Path(origin).resolve().is_relative_to(root)):
        raise ConfigError(f"factory '{spec}': '{module_name}' was imported from {origin}, not from code_path {root} "
                          "(a package of the same name is already imported or installed): rename one of them.")
    return module


def load_factory(spec: str, code_path: str | None = None) -> Callable[..., Any]:
    """The function `spec` ('package.module:function') names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"factory '{spec}' must read 'package.module:function'.")
    module = _import(module_name, spec, code_path)
    func = getattr(module, attr, None)
    if func is None:
        raise ConfigError(f"factory '{spec}': module '{module_name}' has no '{attr}'.")
    if not callable(func) or inspect.isclass(func):
        raise ConfigError(f"factory '{spec}': '{attr}' is a {type(func).__name__}, not a function returning an "
                          "estimator.")
    return func


def build_from_factory(spec: str, code_path: str | None, seed: int) -> Any:
    """A fresh estimator from the factory (passed `seed=` when it takes one); fails with what is wrong with it."""
    func = load_factory(spec, code_path)
    try:
        takes_seed = "seed" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        takes_seed = False
    try:
        estimator = func(seed=seed) if takes_seed else func()
    except Exception as exc:
        raise ConfigError(f"factory '{spec}' raised {type(exc).__name__}: {exc}") from None
    missing = [m for m in ("fit", "predict", "get_params", "set_params") if not callable(getattr(estimator, m, None))]
    if missing:
        raise ConfigError(f"factory '{spec}' returned a {type(estimator).__name__}, not a scikit-learn estimator "
                          f"(no {', '.join(missing)}).")
    if _is_fitted(estimator):
        raise ConfigError(f"factory '{spec}' returned a fitted {type(estimator).__name__}: return an unfitted one, "
                          "nightshift fits it on each night's window.")
    return estimator


def _is_fitted(estimator: Any) -> bool:
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    except (TypeError, AttributeError):  # not an sklearn estimator check_is_fitted understands
        return False
    return True


def check_factory(spec: str, code_path: str | None, task: Task, grid: dict[str, list[ParamValue]],
                  seed: int = 0) -> Any:
    """Everything `python -m cli.catalogue check` and a training run check before any work; returns the estimator."""
    from sklearn.base import clone, is_classifier, is_regressor
    from sklearn.model_selection import ParameterGrid

    estimator = build_from_factory(spec, code_path, seed)
    name = type(estimator).__name__
    if task == "classification":
        if is_regressor(estimator):
            raise ConfigError(f"factory '{spec}' returned a regressor ({name}); set task: regression.")
        if not hasattr(estimator, "predict_proba"):
            raise ConfigError(f"factory '{spec}' returned a {name} without predict_proba: a classifier must give "
                              "class probabilities (the gate, drift and estimates read them).")
    elif is_classifier(estimator):
        raise ConfigError(f"factory '{spec}' returned a classifier ({name}) for task: regression.")
    known = sorted(estimator.get_params(deep=True))
    for candidate in ParameterGrid(grid) if grid else []:
        try:
            clone(estimator).set_params(**candidate)
        except ValueError as exc:
            bad = next((k for k in candidate if k not in known), None)
            shown = ", ".join(k for k in known if "__" in k)[:400] or ", ".join(known)[:400]
            what = f"'{bad}' is not a parameter of it" if bad else str(exc).splitlines()[0]
            raise ConfigError(f"factory '{spec}' grid: {what}; set_params names look like: {shown}") from None
    return estimator


check_factory_task = task(check_factory, name="check-pipeline-factory", cache_policy=NO_CACHE)
