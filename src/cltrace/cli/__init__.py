"""The ``cltrace`` command: a thin shell over the library.

Sub-command groups live in their own modules and register on the apps defined in ``_apps``;
importing them here is what wires them in. :func:`main` owns how a run ends: one line on
stderr for every failure, exit 2 for usage errors, 1 for failures, 130 on Ctrl-C (with what was
kept), and a traceback only with ``--debug`` or ``CLTRACE_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys

from cltrace.cli import (  # noqa: F401  (importing a module registers its commands)
    attribute,
    bundled,
    edges,
    estimate,
    evaluate,
    global_view,
    interpret,
    pie,
    serve,
    supernodes,
    tasks,
    transcoders,
)
from cltrace.cli._apps import app, state
from cltrace.errors import CltraceError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _debug() -> bool:
    return state.debug or os.environ.get("CLTRACE_DEBUG", "") not in ("", "0")


def _say(text: str) -> None:
    print(f"error: {text}", file=sys.stderr)


def _is_click(exc: BaseException, name: str) -> bool:
    # typer >= 0.20 carries its own copy of click (typer._click); older typers use click itself.
    # Both define the same class names, so match by name along the class hierarchy.
    return any(c.__name__ == name for c in type(exc).__mro__)


def _usage_line(exc: BaseException) -> str:
    """One sentence for a click usage error: what was wrong and where the options are listed."""
    ctx = getattr(exc, "ctx", None)
    where = f"`{ctx.command_path} --help`" if ctx is not None else "`cltrace --help`"
    msg = exc.format_message().strip().rstrip(".")
    return f"{msg}; see {where} for the options."


def _interrupted() -> int:
    note = state.interrupt_note or "nothing is left half-written"
    print(f"\ninterrupted: {note}.", file=sys.stderr)
    return EXIT_INTERRUPTED


def _unexpected(exc: BaseException) -> int:
    """A failure no cltrace check anticipated: still one line, with the way to learn more."""
    if isinstance(exc, MemoryError):
        _say("ran out of memory; use a shorter prompt, a smaller --batch-size or fewer prompts.")
        return EXIT_FAILURE
    if isinstance(exc, OSError) and exc.strerror:
        name = exc.filename or "a file"
        _say(f"cannot use {name} ({exc.strerror}); check the path and its permissions.")
        return EXIT_FAILURE
    detail = str(exc).splitlines()[0][:200] if str(exc) else ""
    _say(
        f"unexpected {type(exc).__name__}{': ' + detail if detail else ''}; rerun with "
        "--debug (or CLTRACE_DEBUG=1) for the traceback and report it."
    )
    return EXIT_FAILURE


def run(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    import warnings

    from cltrace._threads import configure_threads

    configure_threads()
    # a user sees one line per warning, not the source line that raised it
    warnings.showwarning = lambda msg, cat, *_a, **_k: print(f"warning: {msg}", file=sys.stderr)
    state.reset()
    try:
        rv = app(args=argv, prog_name="cltrace", standalone_mode=False)
    except CltraceError as exc:
        if _debug():
            raise
        _say(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:
        if _is_click(exc, "NoArgsIsHelpError"):
            # a bare group: show its help, as click does, and exit as for a usage error
            print(exc.format_message(), file=sys.stderr)
            return EXIT_USAGE
        if _is_click(exc, "ClickException"):
            _say(_usage_line(exc))
            return int(getattr(exc, "exit_code", EXIT_USAGE))
        if _is_click(exc, "Abort"):
            return _interrupted()
        if _debug():
            raise
        return _unexpected(exc)
    # typer turns Ctrl-C inside a command into Exit(130) and, outside standalone mode, returns
    # the code instead of raising it
    if rv == EXIT_INTERRUPTED:
        return _interrupted()
    return rv if isinstance(rv, int) else 0


def main() -> None:
    """Console entry point (``cltrace``)."""
    sys.exit(run())


__all__ = ["app", "main", "run"]
