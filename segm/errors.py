"""The mistakes a user can make, each reported as one sentence that says what to do.

main.py maps them to exit statuses: a bad flag or value is a usage error (2); data
that cannot be read and files that cannot be written are errors of the run (1).
"""


class UsageError(Exception):
    """A bad flag or value: exit status 2."""


class DataError(Exception):
    """Data the user can fix (missing, corrupt, too large): exit status 1."""


class FileError(Exception):
    """A file or folder that cannot be written: exit status 1."""
