"""The one exception type for user mistakes.

A `UserError` carries a single line that names the file or option at fault and
what to do; the command line prints it without a traceback. Programming errors
keep their tracebacks.
"""


class UserError(Exception):
    """A mistake in the user's input (a path, an option, a config value)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line
