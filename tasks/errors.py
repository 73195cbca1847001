"""Errors a user can act on.

Each carries one line that says what is wrong, where, and how to fix it; the
CLI prints that line instead of a traceback.
"""


class MemberlinkError(Exception):
    """Base of every error memberlink reports to a person."""

    exit_code = 1


class ConfigError(MemberlinkError):
    """sources.toml is unreadable or names something that does not exist."""

    exit_code = 2


class SourceError(MemberlinkError):
    """A channel's file or query cannot be read as a dataset."""

    exit_code = 2


class ValidationFailed(MemberlinkError):
    """A critical expectation failed for a whole channel: its data is unusable."""


class WarehouseError(MemberlinkError):
    """The warehouse cannot be opened or written."""
