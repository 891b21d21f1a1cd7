"""Errors that carry the file and the fix, so the CLI can print one useful line."""

__all__ = ["RagglmError", "SourceError", "ModelNotFoundError", "RemoteGeneratorError", "ConfigError"]


class RagglmError(Exception):
    """Base class: the message is meant for the user, as is."""


class SourceError(RagglmError):
    """One input (file, folder, URL) could not be read; the others still can."""

    def __init__(self, source: str, problem: str, fix: str = ""):
        self.source = source
        self.problem = problem
        self.fix = fix
        message = f"{source}: {problem}"
        if fix:
            message += f" ({fix})"
        super().__init__(message)


class ModelNotFoundError(RagglmError):
    """A model name or path that resolves to nothing loadable."""


class RemoteGeneratorError(RagglmError):
    """An OpenAI-compatible server used for generation could not be reached or refused the request."""


class ConfigError(RagglmError):
    """A configuration file or setting that cannot be used as written."""
