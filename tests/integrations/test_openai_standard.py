"""LangChain's standard suites on LangChain's own OpenAI classes pointed at `ragglm serve` (a real
server on a loopback port), and on RagGLMRetriever.

ChatOpenAI talks to the plain model ("smollm2"); OpenAIEmbeddings to the served embedder. Tests left
out, and why (none is about format, schema, streaming, usage or parameters):
- test_pdf_inputs, test_audio_inputs, test_image_inputs, test_image_tool_message,
  test_pdf_tool_message, test_anthropic_inputs: skipped by the suite, as the model reads text only
  (the server refuses such parts with a 400 naming them).
- test_stream_time (skipped by the suite unless VCR is set up): times streaming by replaying recorded
  HTTP cassettes; speed is measured in benchmarks/.
Tests that need the model's judgement beyond what a 135M model can do are listed in
standard_suites.JUDGEMENT and OPENAI_JUDGEMENT below, with the reason.
"""

from __future__ import annotations

import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from langchain_tests.integration_tests import (
    ChatModelIntegrationTests,
    EmbeddingsIntegrationTests,
    RetrieversIntegrationTests,
)
from langchain_tests.unit_tests import ChatModelUnitTests

from ragglm.integrations.langchain import RagGLMRetriever
from ragglm.server import KB_MODEL_ID, BackgroundServer, ServerLimits, create_app
from tests.integrations.standard_suites import JUDGEMENT, mark_chat_suite

KEY = "test-key"
UNUSED_URL = "http://127.0.0.1:9/v1"  # the unit suite builds clients and never calls them
# set by the fixtures below: the suites read their parameters from properties, not fixtures
RUNNING: dict = {}


@pytest.fixture(scope="module")
def server(manuals_kb):
    app = create_app(manuals_kb, api_key=KEY, limits=ServerLimits(max_new_tokens=256))
    with BackgroundServer(app, host="127.0.0.1", port=0) as running:
        RUNNING.update(base_url=running.base_url, embedder=manuals_kb.store.embedder.name)
        yield running
    RUNNING.clear()


@pytest.fixture(scope="module")
def knowledge_base(manuals_kb):
    RUNNING["knowledge_base"] = manuals_kb
    yield manuals_kb
    RUNNING.pop("knowledge_base", None)


@pytest.fixture(autouse=True)
def no_tiktoken(monkeypatch):
    """LangChain's OpenAI classes count tokens with tiktoken, whose files come from the network:
    nothing here may ask for them."""
    import tiktoken

    def refuse(*args, **kwargs):
        raise AssertionError("tiktoken was asked for an encoding, which it would fetch from the network")

    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    monkeypatch.setattr(tiktoken, "encoding_for_model", refuse)


class TestChatOpenAIOnServerUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict:
        return {"model": "smollm2", "base_url": UNUSED_URL, "api_key": KEY}  # built, never called

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        return ({"OPENAI_API_KEY": KEY, "OPENAI_API_BASE": UNUSED_URL}, {"model": "smollm2"},
                {"openai_api_key": KEY, "openai_api_base": UNUSED_URL})


@pytest.mark.slow  # some fifty generations
@pytest.mark.usefixtures("server")
class TestChatOpenAIOnServer(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatOpenAI]:
        return ChatOpenAI

    @property
    def chat_model_params(self) -> dict:
        # stream_usage: the server sends usage in a last chunk when asked (stream_options)
        return {"model": "smollm2", "base_url": RUNNING["base_url"], "api_key": KEY, "max_tokens": 64,
                "stream_usage": True, "max_retries": 0}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return KB_MODEL_ID  # the documents' model: it answers a "Hello" too, from the manuals


@pytest.mark.usefixtures("knowledge_base")
class TestRagGLMRetriever(RetrieversIntegrationTests):
    pytestmark = pytest.mark.asyncio

    @property
    def retriever_constructor(self) -> type[RagGLMRetriever]:
        return RagGLMRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"knowledge_base": RUNNING["knowledge_base"], "k": 2}

    @property
    def retriever_query_example(self) -> str:
        return "How long does the AquaPure W3 filter last?"


@pytest.mark.usefixtures("server")
class TestOpenAIEmbeddingsOnServer(EmbeddingsIntegrationTests):
    pytestmark = pytest.mark.asyncio(loop_scope="module")

    @property
    def embeddings_class(self) -> type[OpenAIEmbeddings]:
        return OpenAIEmbeddings

    @property
    def embedding_model_params(self) -> dict:
        # the server takes text, not another model's token ids: no client-side chunking by tiktoken
        return {"model": RUNNING["embedder"], "base_url": RUNNING["base_url"], "api_key": KEY,
                "check_embedding_ctx_length": False, "max_retries": 0}


# ChatOpenAI's json_mode sends response_format json_object without the schema: the server holds the
# output to a JSON object, and which keys it has is the model's reading of the prompt
OPENAI_JUDGEMENT = {**JUDGEMENT, "test_json_mode": "json_mode sends no schema, only 'a JSON object'; "
                                                   "SmolLM2 leaves out a key the prompt asks for"}
# ChatOpenAI keeps one async HTTP client across calls, bound to the event loop that opened it
mark_chat_suite(TestChatOpenAIOnServer, OPENAI_JUDGEMENT, loop_scope="module")
