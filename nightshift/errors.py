"""Exception types whose messages tell the user what is wrong and what to do."""

from __future__ import annotations


class NightshiftError(Exception):
    """Base class: a problem the user can act on, stated in one sentence."""


class DataLoadError(NightshiftError):
    """A dataset could not be found, read or parsed."""


class TransientLoadError(DataLoadError):
    """A remote dataset could not be read for a reason that may pass (network, server); worth a retry."""


class DataValidationError(NightshiftError):
    """A dataset was read but cannot be used as given (missing label, too few rows, ...)."""


class ConfigError(NightshiftError, ValueError):
    """A parameter or setting is invalid in a way a schema cannot express."""


class TrackingError(NightshiftError):
    """MLflow state is missing or inconsistent (no such model, version or alias)."""


class TrackingUnavailable(TrackingError):
    """The MLflow tracking/registry store failed or could not be reached; never read as "absent". Worth a retry."""


class PromotionRefused(NightshiftError):
    """A promotion was asked for without a decision that allows it."""


class LockTimeout(NightshiftError):
    """A per-model lock stayed held by another run for longer than the timeout."""
