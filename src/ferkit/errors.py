"""Errors that mean the user gave ferkit something wrong; the CLI prints them as one line and exits with 2.

Each also subclasses the built-in exception a Python caller would expect (``ValueError`` for a value ferkit cannot
use, ``LookupError`` for a name nothing is registered under, ``TypeError`` for an argument of the wrong type), so
``except ValueError`` works as well as ``except FerkitError``.
"""


class FerkitError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class InputError(FerkitError, ValueError):
    """A value ferkit cannot use: an image array, a setting, a number out of range."""


class InputTypeError(FerkitError, TypeError):
    """An argument of a type ferkit does not take."""


class UnknownNameError(FerkitError, LookupError):
    """A name under which nothing is registered: a model, detector, optimizer, schedule, backend, preset."""


class DataError(FerkitError, ValueError):
    """A dataset, file or label mapping that ferkit cannot use."""
