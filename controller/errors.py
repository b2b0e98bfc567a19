"""Error types the CLI catches, importable without Celery, Redis or TensorFlow."""


class ServiceError(RuntimeError):
    """An embedded service could not start; the message says why and what to do."""


class DispatchError(RuntimeError):
    """A job could not be sent or its outcome not received; the message says what to do."""


class DataDirError(RuntimeError):
    """The data directory cannot be made or used; the message names it and the setting."""
