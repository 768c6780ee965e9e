"""The exception types the command line answers in one line: user mistakes, and runs stopped by a signal.

A `UserError` carries a single line that names the file or option at fault and
what to do; the command line prints it without a traceback. Programming errors
keep their tracebacks.
"""


class UserError(Exception):
    """A mistake in the user's input (a path, an option, a config value)."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


class Stopped(Exception):
    """A run stopped by a signal before it finished; `status` is the exit status the shell gives that
    signal (130 for SIGINT, 143 for SIGTERM), so schedulers and `&&` chains see a stopped run."""

    def __init__(self, message: str, status: int):
        super().__init__(" ".join(str(message).split()))
        self.status = status
