"""ragglm: question answering over long documents, with cited sources, on an in-package GLM engine."""

from ragglm.config import Settings
from ragglm.documents import Answer, AnswerPlan, Chunk, Citation, ContextPlan, Document, Hit, Page
from ragglm.errors import (
    ConfigError,
    ContextLengthError,
    IndexMismatchError,
    InvalidRequestError,
    ModelNotFoundError,
    RagglmError,
    RemoteGeneratorError,
    SourceError,
)
from ragglm.ingestor import Ingestor, IngestReport
from ragglm.knowledge_base import KnowledgeBase

__version__ = "0.1.0"

__all__ = [
    "Answer", "AnswerPlan", "Chunk", "Citation", "ConfigError", "ContextLengthError", "ContextPlan", "Document",
    "Hit", "IndexMismatchError", "IngestReport", "Ingestor", "InvalidRequestError", "KnowledgeBase",
    "ModelNotFoundError", "Page", "RagglmError", "RemoteGeneratorError", "Settings", "SourceError", "__version__",
]
