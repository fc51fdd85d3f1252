"""nightshift: keeps a scikit-learn model honest in production."""

from __future__ import annotations

__version__ = "0.1.0"
