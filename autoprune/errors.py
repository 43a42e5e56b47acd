"""Errors a user can fix: the CLI prints them as one line and exits non-zero."""


class AutopruneError(Exception):
    """A problem with the user's input or environment, stated with its fix."""

    exit_code = 2


class Interrupted(AutopruneError):
    """Ctrl-C or SIGTERM stopped a study; it is resumable (the conventional exit code of an interrupt)."""

    exit_code = 130


class ConfigError(AutopruneError):
    """The configuration names something unknown or out of range."""


class ModelLoadError(AutopruneError):
    """The model's weights or tokenizer could not be loaded."""
