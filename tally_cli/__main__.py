"""`python -m tally_cli ...` is the `tally` command."""

from tally_cli.main import app

__all__ = []

app(prog_name="tally")
