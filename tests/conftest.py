"""Shared fixtures: the packaged default models (loaded once) and the shared data folder."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Caches that tests create go to a temporary folder, never to the user's ~/.cache.
if "RAGGLM_CACHE_DIR" not in os.environ:
    os.environ["RAGGLM_CACHE_DIR"] = tempfile.mkdtemp(prefix="ragglm-test-cache-")
    atexit.register(shutil.rmtree, os.environ["RAGGLM_CACHE_DIR"], ignore_errors=True)
MANUALS = REPO / "examples" / "manuals"


def shared_data_dir() -> Path | None:
    """RAGGLM_SHARED_DATA, else ../shared/data beside the checkout (or beside its parent)."""
    candidates = [os.environ.get("RAGGLM_SHARED_DATA"), REPO.parent / "shared" / "data",
                  REPO.parent.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = shared_data_dir()
    if folder is None:
        pytest.skip("../shared/data is absent (set RAGGLM_SHARED_DATA to its path)")
    return folder


@pytest.fixture(scope="session")
def manuals() -> Path:
    return MANUALS


@pytest.fixture(scope="session")
def smollm2():
    """The packaged SmolLM2-135M-Instruct engine in float32 throughout (the reference tests need it)."""
    from ragglm.engine import Engine

    return Engine.from_pretrained("smollm2", dtype="fp32")


@pytest.fixture(scope="session")
def embedder():
    from ragglm.index import Embedder

    return Embedder()


@pytest.fixture(scope="session")
def manuals_kb(smollm2):
    """The example manuals (PDF, Markdown, HTML) in an in-memory KnowledgeBase on the SmolLM2 engine."""
    from ragglm import KnowledgeBase

    knowledge_base = KnowledgeBase(generator=smollm2, top_k=2, max_new_tokens=12)
    knowledge_base.add(MANUALS)
    return knowledge_base


def streamed_ask(knowledge_base, question: str):
    """kb.ask with the answer streamed, as the server and the LangChain LLM run it."""
    return knowledge_base.ask(question, on_text=lambda piece: None)


SERVER_KEY = "test-key"


@pytest.fixture(scope="session")
def manuals_server(manuals_kb):
    """`ragglm serve` over the example manuals on loopback, answering with SmolLM2 (64 new tokens at most)."""
    from ragglm.server import BackgroundServer, ServerLimits, create_app

    app = create_app(manuals_kb, api_key=SERVER_KEY, limits=ServerLimits(max_new_tokens=64))
    with BackgroundServer(app, host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture(scope="session")
def manuals_client(manuals_server):
    """The official openai client pointed at manuals_server."""
    import openai

    return openai.OpenAI(base_url=manuals_server.base_url, api_key=SERVER_KEY, max_retries=0, timeout=300)
