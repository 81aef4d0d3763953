"""Run the command line as ``python -m bindindex``."""

from bindindex.cli.app import main

main()
