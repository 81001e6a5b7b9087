"""The `llamavid` command line: a thin Typer layer over the `llamavid` library."""
