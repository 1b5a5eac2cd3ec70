"""User-facing errors.

Every problem caused by the user's input (a missing or corrupt file, a wrong shape, an impossible option)
is raised as :class:`FailatlasError` with a message that names the problem and the fix. The CLI prints
that message on one line and exits with status 2; it never shows a traceback for these.
"""

from __future__ import annotations


class FailatlasError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""

    exit_code = 2


def require(condition: bool, message: str) -> None:
    """Raise :class:`FailatlasError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise FailatlasError(message)
