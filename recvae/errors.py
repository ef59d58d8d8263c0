"""The one exception type users see: a message that says what was wrong and what to do.

The CLI turns it into a red one-line error and exit code 2 instead of a traceback.
"""


class RecvaeError(Exception):
    """Bad input or a refused operation, with a message written for the person running the job."""
