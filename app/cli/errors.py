"""The CLI's one error type, in its own module so that the command modules import it without
importing the package that imports them."""
from __future__ import annotations


class CliError(Exception):
    """A user error: printed as one line, exit code 2."""
