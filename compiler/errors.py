"""The one error type a user sees.

Anything raised as `EtchError` is a problem with the user's input (a model, an option, an
input file) and is printed by the CLI as one line; anything else is a bug in etch.
"""


class EtchError(Exception):
    """A user-facing error: one line, no traceback unless `--debug`."""
