"""Typer apps shared by the command modules (kept apart to avoid import cycles)."""

from __future__ import annotations

from dataclasses import dataclass

import typer

import cltrace


@dataclass
class CliState:
    """What the running command tells :func:`cltrace.cli.main` about how to end."""

    debug: bool = False
    """``--debug``: let tracebacks through."""
    interrupt_note: str | None = None
    """What Ctrl-C leaves behind and how to resume (said on the line printed at exit 130)."""

    def reset(self) -> None:
        self.debug = False
        self.interrupt_note = None


state = CliState()

app = typer.Typer(
    name="cltrace",
    help="Find circuits in language models through cross-layer transcoders.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(
    help="Make and evaluate task datasets (IOI, Doc-String).", no_args_is_help=True
)
train_app = typer.Typer(help="Train the bundled model or a transcoder.", no_args_is_help=True)
transcoder_app = typer.Typer(help="Inspect and evaluate transcoders.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(train_app, name="train")
app.add_typer(transcoder_app, name="transcoder")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cltrace {cltrace.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", help="Show the traceback of a failure (also CLTRACE_DEBUG=1)."
    ),
) -> None:
    """cltrace: attribution graphs, pruning-first interpretation and explanation scoring."""
    state.debug = debug


def positive_float(value: float | None, flag: str, allow_zero: bool = False) -> None:
    """A finite number > 0 (or >= 0) for ``flag``, else a usage error naming it."""
    import math

    from cltrace.errors import UsageError

    if value is None:
        return
    ok = math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise UsageError(f"{flag} must be a finite number {bound}, got {value}.")
