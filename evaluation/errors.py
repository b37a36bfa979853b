"""Errors raised by the evaluation package.

Every refusal is an ``EvaluationError`` (itself a ``ValueError``) whose message names
the problem in one line, so the web app can show it to the researcher and the CLI can
print it and exit with code 2.
"""


class EvaluationError(ValueError):
    """Bad input (table, settings) that the analysis refuses with a clear message."""
