"""The model server's own errors: a request it cannot answer, with the HTTP status that says why."""

from __future__ import annotations

from nightshift.errors import NightshiftError


class ScoringError(NightshiftError):
    """A request the server cannot score; carries the HTTP status and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class NoChampionError(ScoringError):
    """The model has no champion alias yet: nothing to serve until one is promoted and reloaded."""
