"""Errors that end a command with exit status 2: the user can fix them."""


class UsageError(Exception):
    """Bad input or configuration that is not a parameter, an image or the weights."""


class ConfigError(UsageError):
    """A server option that cannot work; the message says which and why."""
