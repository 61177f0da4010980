"""Typed errors. Everything clip-onnx raises on purpose derives from ClipOnnxError.

The CLI turns these into one-line messages on stderr; anything else is a bug
and is allowed to show its traceback.
"""


class ClipOnnxError(Exception):
    """Base class of every error clip-onnx raises deliberately."""


class InputError(ClipOnnxError, ValueError):
    """A caller passed a value the runtime cannot use (bad image, non-string text, empty batch)."""


class BundleError(ClipOnnxError):
    """A bundle directory is missing, incomplete, tampered with or of an unknown format."""


class SelfTestError(BundleError):
    """A bundle's own self-test gives other vectors on this machine than where it was exported.

    ``report`` is the ``clip_onnx.runtime.self_test.SelfTestReport`` with every tower's figures.
    """

    def __init__(self, message: str, report=None):
        self.report = report
        super().__init__(message)


class ModelSourceError(ClipOnnxError):
    """A model name, hub id or local directory could not be resolved or loaded."""


class ExportError(ClipOnnxError):
    """Converting a torch model to ONNX failed or produced a graph of the wrong shape."""


class CheckpointError(ModelSourceError, ExportError):
    """A checkpoint file is unreadable, not a weights-only PyTorch file, or does not fit its architecture."""


class ParityError(ExportError):
    """The exported graphs do not reproduce eager PyTorch within the thresholds.

    ``failures`` lists one human-readable line per failing output so that the
    message shows every problem at once, not only the first; ``report`` is the
    comparison that failed (a ``clip_onnx.parity.ParityReport``) where there is one.
    """

    def __init__(self, failures, report=None):
        self.failures = list(failures)
        self.report = report
        super().__init__("parity check failed:\n  " + "\n  ".join(self.failures))


class TritonError(ClipOnnxError):
    """A Triton model repository cannot be written, or a server started, from this bundle with these options."""


class BackendError(ClipOnnxError):
    """An inference backend could not be created or refused the request."""


class JobError(ClipOnnxError):
    """A distributed job stopped making progress (a cluster that lost what it needs) and was ended."""


class ApiError(ClipOnnxError):
    """A request to the OpenAI-compatible API that is answered with an error: its HTTP status and OpenAI's fields.

    ``kind`` is OpenAI's ``error.type`` ("invalid_request_error", "authentication_error", "server_error"),
    ``param`` the request field at fault (``input[3]``), ``code`` a stable machine-readable reason.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        super().__init__(message)
