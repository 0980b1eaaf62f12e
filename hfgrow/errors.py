"""The one exception type users see: a single clear sentence, no traceback."""


class HfgrowError(Exception):
    """Bad input or an environment problem the user can fix.

    The CLI prints ``error: <message>`` and exits with status 1. Library callers
    can catch it like any exception.

    Example:
        >>> raise HfgrowError("SRC 'foo' is neither a folder nor a Hub repo id.")
    """
