"""The errors services raise; views turn them into HTTP 4xx answers with the message."""

from __future__ import annotations


class ServiceError(ValueError):
    """A request that cannot be carried out; the message says why (shown as HTTP 4xx)."""


class ConflictError(ServiceError):
    """The request conflicts with the current state (HTTP 409)."""


class TrialNotFound(ServiceError):
    """The session has no trial of that number (HTTP 404)."""


class RuleBroken(ServiceError):
    """A saved trial breaks one of the experiment's rules (``rules.RULE_DEFAULTS``): HTTP 400
    naming the rule, so the page and the researcher see which one and why."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__(f"{rule}: {message}")


class FieldError(ServiceError):
    """One field of a request is missing or wrong: HTTP 400 naming the field, nothing stored."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")
