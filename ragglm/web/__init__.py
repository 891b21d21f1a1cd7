"""The web page and document API served beside the OpenAI-compatible one: several knowledge bases,
uploads indexed in the background, search, and a page that asks questions with cited sources."""

from ragglm.web.kb_api import install_web
from ragglm.web.registry import KnowledgeBases, Library, open_knowledge_bases

__all__ = ["KnowledgeBases", "Library", "install_web", "open_knowledge_bases"]
