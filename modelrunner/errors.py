"""Errors raised by the model runner.

Every refusal is a subclass of ``ModelRunnerError`` (itself a ``ValueError``) whose
message names the problem in one line, so the web app can show it as an HTTP 400
reason and the CLI can print it and exit with code 2.
"""


class ModelRunnerError(ValueError):
    """Base class: bad input that the runner refuses with a clear message."""


class AudioError(ModelRunnerError):
    """An audio file or array that cannot be used (unreadable, NaN, wrong rate...)."""


class CheckpointError(ModelRunnerError):
    """A checkpoint that cannot be loaded safely or does not match its architecture."""


class RenderError(ModelRunnerError):
    """Rendering failed (non-finite output, knob out of range, ...)."""
