"""Errors that carry a message fit for a user: what is at fault (file, row, key, stage) and the fix."""


class GradusError(RuntimeError):
    """Base of every error gradus reports as one clear line instead of a traceback."""


class DataError(GradusError):
    """A data source or dataset is unusable (unreadable file, missing column, too many bad rows)."""


class ModelError(GradusError):
    """A model or its files are missing, unsafe or inconsistent."""


class RegistryError(GradusError):
    """A registry request cannot be met (unknown version, no such alias, unreachable store)."""


class ConflictError(RegistryError):
    """Aliases changed between reading and writing them (compare-and-swap lost); re-read and retry."""


class IntegrityError(RegistryError):
    """A stored file does not match its manifest, is missing, or is not in a safe format."""


class ConfigError(GradusError, ValueError):
    """params.yaml (or an override) is invalid; the message names the key and what is expected."""
