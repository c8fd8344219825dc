"""Errors that a user can fix.

Every error raised for bad input (a missing column, a wrong image shape, a missing weight file) derives
from `UserError`, so that CLIs can print the one-sentence message without a traceback and servers can send
it to clients without leaking internals.
"""


class UserError(Exception):
    """An error caused by the user's input or environment; the message says what is wrong and what to do."""


class DatasetError(UserError, ValueError):
    """A dataset on disk is missing, malformed, or lacks what the caller needs."""


class CheckpointError(UserError, ValueError):
    """A checkpoint or weight file is missing or does not match the model."""


class ConfigError(UserError, ValueError):
    """A configuration is inconsistent or names something that does not exist."""


class ServerSetupError(ConfigError):
    """A server's own setup (its norm stats, config or checkpoint) does not fit the requests it must serve.

    The operator's fault, not the client's: the websocket server answers it as a server error (never "Bad request"),
    and a CLI that hits it (a warm-up request) prints it in one line like any `UserError`.
    """


class OutputError(UserError):
    """An output path cannot be created or written (under a regular file, or in a directory this user cannot write)."""
