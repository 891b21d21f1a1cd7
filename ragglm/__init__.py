"""ragglm: question answering over long documents, with cited sources, on an in-package GLM engine."""

from ragglm.config import Settings
from ragglm.documents import Answer, Chunk, Citation, Document, Hit, Page
from ragglm.errors import ModelNotFoundError, RagglmError, SourceError
from ragglm.knowledge_base import IngestReport, KnowledgeBase

__version__ = "0.1.0"

__all__ = [
    "Answer", "Chunk", "Citation", "Document", "Hit", "IngestReport", "KnowledgeBase",
    "ModelNotFoundError", "Page", "RagglmError", "Settings", "SourceError", "__version__",
]
