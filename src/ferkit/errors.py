"""Errors that mean the user gave ferkit something wrong; the CLI prints them as one line and exits with 2."""


class FerkitError(Exception):
    """A user-facing error: the message says what is wrong and what to do."""


class DataError(FerkitError):
    """A dataset, file or label mapping that ferkit cannot use."""
