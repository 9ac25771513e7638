"""The exception types users see.

Every failure caused by user input raises :class:`CltraceError` with one sentence that names the
bad input and says what to do. The CLI prints the message without a traceback and exits with the
error's ``exit_code``: 2 for :class:`UsageError` (a bad option or argument on the command line),
1 for every other failure (a bad file, a model that will not load, an endpoint that refuses).
"""


class CltraceError(Exception):
    """A user-facing error: one clear sentence naming the input and the fix."""

    exit_code = 1


class UsageError(CltraceError):
    """A bad command-line option or argument value (the CLI exits 2, as for parse errors)."""

    exit_code = 2


class RunInUseError(CltraceError):
    """Another process holds the lock of a run directory."""
