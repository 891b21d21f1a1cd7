"""Errors that carry the file and the fix, so the CLI can print one useful line.

Each class has an exit code for the shell and an HTTP status for the server: callers map errors by
type, never by reading the message.
"""

__all__ = ["RagglmError", "SourceError", "ModelNotFoundError", "RemoteGeneratorError", "ConfigError",
           "ContextLengthError", "IndexMismatchError", "InvalidRequestError"]


class RagglmError(Exception):
    """Base class: the message is meant for the user, as is."""

    exit_code = 2
    http_status = 400
    code: str | None = None  # OpenAI-style error code


class SourceError(RagglmError):
    """One input (file, folder, URL) could not be read; the others still can."""

    exit_code = 1

    def __init__(self, source: str, problem: str, fix: str = ""):
        self.source = source
        self.problem = problem
        self.fix = fix
        message = f"{source}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)

    def __reduce__(self):  # pickled by parser processes: rebuilt from its parts, not its message
        return SourceError, (self.source, self.problem, self.fix)


class ModelNotFoundError(RagglmError):
    """A model name or path that resolves to nothing loadable."""

    exit_code = 3
    http_status = 404
    code = "model_not_found"


class RemoteGeneratorError(RagglmError):
    """An OpenAI-compatible server used for generation could not be reached or refused the request."""

    exit_code = 4
    http_status = 502


class ConfigError(RagglmError):
    """A configuration file or setting that cannot be used as written."""


class InvalidRequestError(RagglmError):
    """A question or request that cannot be answered as asked (empty question, unknown mode)."""


class ContextLengthError(RagglmError):
    """The prompt and the tokens asked for do not fit the model's window."""

    code = "context_length_exceeded"


class IndexMismatchError(RagglmError):
    """A saved index that cannot be used with this configuration (another embedder, a missing store)."""
