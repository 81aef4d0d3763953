"""The Typer command line: parses options, calls the library, formats results."""
