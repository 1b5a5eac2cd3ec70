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


def error_line(exc: BaseException, limit: int = 240) -> str:
    """The one line of a caught exception that says what went wrong, for a :class:`FailatlasError` message:
    its first line, or its last when TorchScript's interpreter put its banner first (the cause comes last),
    cut to ``limit`` characters; the exception's type name when it has no text."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if "TorchScript interpreter" in lines[0] else lines[0]
    return line if len(line) <= limit else line[:limit - 1] + "…"


class ResultFileError(FailatlasError, ValueError):
    """A result file (JSON) its reader cannot take: not JSON, another kind of file, a format version this
    failatlas does not read, or damaged content. Also a :class:`ValueError`, for callers that catch those."""


class ResultFileNotFoundError(FailatlasError, FileNotFoundError):
    """A result file that does not exist. Also a :class:`FileNotFoundError`."""
