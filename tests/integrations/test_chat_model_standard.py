"""LangChain's standard chat-model suites on ChatRagGLM with the packaged SmolLM2.

Tests left out, and why (none is about format, schema, streaming, usage or parameters):
- test_pdf_inputs, test_audio_inputs, test_image_inputs, test_image_tool_message,
  test_pdf_tool_message, test_anthropic_inputs: skipped by the suite, as the model reads text only
  (ChatRagGLM refuses such content by name).
- test_stream_time (skipped by the suite unless VCR is set up): times streaming by replaying recorded
  HTTP cassettes; ChatRagGLM makes no HTTP calls, and speed is measured in benchmarks/.
- test_init_from_env, test_serdes: skipped by the suite itself, as ChatRagGLM reads no API key from
  the environment and is not serializable (it holds a live knowledge base).
Tests that need the model's judgement beyond what a 135M model can do are listed in
standard_suites.JUDGEMENT, with the reason.
"""

from __future__ import annotations

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from ragglm.engine.loading.sources import resolve_model_path
from ragglm.integrations import langchain as module
from ragglm.integrations.langchain import ChatRagGLM
from tests.integrations.standard_suites import mark_chat_suite

# the packaged model's file: the same weights as "smollm2", named another way for the override tests
SMOLLM2_FILE = str(resolve_model_path("smollm2"))


@pytest.fixture(scope="module")
def shared_engine(smollm2):
    """Every ChatRagGLM the suites build uses the session's engine instead of loading its own."""
    saved = dict(module._loaded)
    module._loaded[("smollm2", None, "cpu")] = smollm2
    module._loaded[(SMOLLM2_FILE, None, "cpu")] = smollm2
    yield
    module._loaded.clear()
    module._loaded.update(saved)


class TestChatRagGLMUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatRagGLM]:
        return ChatRagGLM

    @property
    def chat_model_params(self) -> dict:
        return {"model": "smollm2"}

    @property
    def standard_chat_model_params(self) -> dict:
        # the model runs in this process: there is no API key to give, and ChatRagGLM refuses one
        return {k: v for k, v in super().standard_chat_model_params.items() if k != "api_key"}


@pytest.mark.slow  # some fifty generations
@pytest.mark.usefixtures("shared_engine")
class TestChatRagGLMIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatRagGLM]:
        return ChatRagGLM

    @property
    def chat_model_params(self) -> dict:
        # a short budget keeps the suite quick (the tests read the shape of answers, not their length);
        # a tool call needs ~30 tokens, which the engine checks before generating
        return {"model": "smollm2", "max_tokens": 64}

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return SMOLLM2_FILE


mark_chat_suite(TestChatRagGLMIntegration)
