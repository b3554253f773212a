"""Error types. Every user-facing failure is one of these, so the CLI and server can turn it into one
clear line (CLI) or a 4xx JSON body (server) instead of a traceback."""


class DiffasrError(Exception):
    """Base class for errors caused by the user's input or environment (not by a bug)."""


class AudioError(DiffasrError):
    """The audio could not be decoded, or it is empty, truncated, non-finite or otherwise unusable."""


class ModelError(DiffasrError):
    """A model or checkpoint could not be found or does not match what the code expects."""


class ConfigError(DiffasrError):
    """An option or configuration file has an invalid value."""


class DataError(DiffasrError):
    """A manifest, corpus or dataset is malformed (the message names the file and line)."""
