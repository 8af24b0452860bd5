"""`python -m tally_cli ...` is the `tally` command."""

from tally_cli.main import app

app(prog_name="tally")
