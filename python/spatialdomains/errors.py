"""Exceptions a user can act on."""


class InputError(ValueError):
    """Bad input: the message names the field that is wrong and how to fix it."""


class BackendUnavailable(RuntimeError):
    """An optional backend (R, mclust, rpy2) is missing: the message names what to install or the fallback."""


class ReportFailed(RuntimeError):
    """A report's notebook failed: the message carries the notebook's own error."""
