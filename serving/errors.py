"""Errors a caller can cause, reported back on the request instead of failing the model."""

from __future__ import annotations


class RequestError(ValueError):
    """A bad request: the message says what was wrong and what is allowed."""
