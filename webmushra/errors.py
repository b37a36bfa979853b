"""The errors services raise; views turn them into HTTP 4xx answers with the message."""

from __future__ import annotations


class ServiceError(ValueError):
    """A request that cannot be carried out; the message says why (shown as HTTP 4xx)."""


class ConflictError(ServiceError):
    """The request conflicts with the current state (HTTP 409)."""


class TrialNotFound(ServiceError):
    """The session has no trial of that number (HTTP 404)."""
