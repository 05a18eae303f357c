"""ganforge's own exception types.

Every error a user can cause derives from :class:`GanforgeError`; the CLI prints its message
and exits non-zero, and the HTTP layer maps ``http_status`` to the response code. Messages
name the field at fault and what it allows.
"""


class GanforgeError(Exception):
    """Base class: a failure that is explained to the user, never a stack trace."""

    http_status = 500


class InvalidInput(GanforgeError, ValueError):
    """A field of a request, spec or command line is out of range."""

    http_status = 422

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class DataNotFound(GanforgeError):
    """The dataset is not where the settings say and may not be downloaded."""

    http_status = 503


class ModelNotFound(GanforgeError, LookupError):
    """No model in the store matches the requested tag."""

    http_status = 404


class ModelUnavailable(ModelNotFound):
    """The store holds that version but it cannot be served (damaged or missing files); asked
    again once its files change. A 404 like an unknown version: nothing can be served for it."""


class TrainingDiverged(GanforgeError):
    """A loss became NaN or infinite; the run stops and registers nothing."""

    http_status = 500


class TrainingCancelled(GanforgeError):
    """The run was asked to stop between two steps; its checkpoint is kept."""

    http_status = 409


class ExportParityError(GanforgeError):
    """The ONNX graph does not reproduce the PyTorch generator within tolerance."""

    http_status = 500


class JobNotFound(GanforgeError, LookupError):
    """No job has that id."""

    http_status = 404


class ArtifactNotReady(GanforgeError, LookupError):
    """The job exists but has not written that file yet (or ran on a machine whose runs folder
    this process cannot see)."""

    http_status = 404


class CorruptModel(GanforgeError):
    """A stored model cannot be loaded (missing or damaged file, unexpected graph)."""

    http_status = 500
