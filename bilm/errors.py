"""One exception type for every problem the user can fix.

The CLI turns a `BilmError` into a one-line message and a non-zero exit; anything
else is a bug and keeps its traceback.
"""


class BilmError(Exception):
    """A clear, user-facing error (bad input, missing corpus, corrupt checkpoint...)."""
