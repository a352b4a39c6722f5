"""One exception hierarchy for the whole library; the CLI maps each class to a named exit code."""


class MagrayError(Exception):
    """Base of every error magray raises on purpose. Its message is one line meant for a person."""


class InvalidInput(MagrayError):
    """The caller passed something magray cannot store or understand (bad layer, empty text...)."""


class NotFound(MagrayError):
    """The memory, model or file asked for does not exist."""


class StoreError(MagrayError):
    """The memory file cannot be opened or used (not SQLite, a directory, read-only, disk full...)."""


class SchemaTooNew(StoreError):
    """The file was written by a newer magray; opening it with this code could damage it."""


class ModelError(MagrayError):
    """The embedding model is missing, corrupt, unverifiable or does not match the file's binding."""


class ModelMismatch(ModelError):
    """The file's vectors were made by another model (or dimension) than the one asked for."""


class Busy(StoreError):
    """Another process held the write lock for longer than the retry budget."""


class ReplicaError(MagrayError):
    """The replica cannot be reached or read, or Litestream failed (or is not installed)."""
