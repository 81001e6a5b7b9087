"""`python -m llamavid_cli` runs the `llamavid` command."""

from .main import main

main()
