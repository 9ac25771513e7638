"""The ``cli`` fixture of tests/cli (runs the ``cltrace`` command in a subprocess)."""

from tests.cli.conftest import cli  # noqa: F401
