"""The `ragglm` model takes the whole conversation over HTTP: a follow-up is answered from the documents
with citations, through the official openai client and through LangChain's ChatOpenAI; a system message
is given to the model after the grounding rules."""

from __future__ import annotations

import dataclasses

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI

from ragglm.integrations.langchain import citations_from
from ragglm.server import KB_MODEL_ID
from tests.conftest import SERVER_KEY as KEY

QUESTION = "How long does the AquaPure W3 filter last?"
FOLLOW_UP = "How do I replace it?"
MANUAL = "aquapure-w3-manual.pdf"


@pytest.fixture(scope="module")
def server(manuals_server):
    return manuals_server


@pytest.fixture(scope="module")
def client(manuals_client):
    return manuals_client


@pytest.fixture(scope="module")
def conversation(client) -> list[dict]:
    first = client.chat.completions.create(model=KB_MODEL_ID, messages=[{"role": "user", "content": QUESTION}],
                                           max_tokens=12)
    return [{"role": "user", "content": QUESTION},
            {"role": "assistant", "content": first.choices[0].message.content},
            {"role": "user", "content": FOLLOW_UP}]


def test_follow_up_is_answered_from_the_documents_with_citations(client, conversation, manuals_kb):
    completion = client.chat.completions.create(model=KB_MODEL_ID, messages=conversation, max_tokens=12)
    # rewritten to stand alone with the first question's topic, then answered as the pipeline does
    assert "filter" in completion.ragglm["plan"]["standalone_question"].lower()
    expected = manuals_kb.chat(conversation, on_text=lambda piece: None, max_new_tokens=12)
    assert completion.choices[0].message.content == expected.text
    citations = completion.citations
    assert citations and citations[0]["source"] == MANUAL  # named within the knowledge base's folder
    assert [c["source"] for c in citations] == [c.source.rsplit("/", 1)[1] for c in expected.citations]
    assert [c["text"] for c in citations] == [c.text for c in expected.citations]
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    # streamed, the same answer and, in the last chunk, the same citations
    pieces, last = [], None
    for chunk in client.chat.completions.create(model=KB_MODEL_ID, messages=conversation, max_tokens=12,
                                                stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        last = chunk
    assert "".join(pieces).strip() == expected.text
    assert last.citations == citations


def test_citations_reach_a_chat_openai_user(server, client, conversation):
    chat = ChatOpenAI(model=KB_MODEL_ID, base_url=server.base_url, api_key=KEY, max_tokens=12, max_retries=0,
                      include_response_headers=True)
    history = [HumanMessage(QUESTION), AIMessage(conversation[1]["content"]), HumanMessage(FOLLOW_UP)]
    message = chat.invoke(history)
    body = client.chat.completions.create(model=KB_MODEL_ID, messages=conversation, max_tokens=12)
    assert message.content == body.choices[0].message.content
    cited = citations_from(message)
    assert cited and [c["source"] for c in cited] == [c["source"] for c in body.citations]
    assert [c["page"] for c in cited] == [c["page"] for c in body.citations]
    assert cited[0]["source"] == MANUAL


def test_a_system_message_reaches_the_documents_model_within_its_rules(client, manuals_kb, monkeypatch):
    system = "You are the AquaPure support desk. Keep to one sentence."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}]
    # SmolLM2 answers by extract in auto mode: it quotes, so the instructions are reported as not followed
    quoted = client.chat.completions.create(model=KB_MODEL_ID, messages=messages, max_tokens=12)
    assert quoted.ragglm["plan"]["instructions"] == "not followed: the answer quotes the documents as they are"
    # made to generate, the model gets them, and answers as KnowledgeBase.ask does with them
    monkeypatch.setattr(manuals_kb.pipeline, "config",
                        dataclasses.replace(manuals_kb.pipeline.config, small_model_extracts=False))
    generated = client.chat.completions.create(model=KB_MODEL_ID, messages=messages, max_tokens=12)
    plain = client.chat.completions.create(model=KB_MODEL_ID, messages=messages[1:], max_tokens=12)
    expected = manuals_kb.ask(QUESTION, on_text=lambda piece: None, max_new_tokens=12, instructions=system)
    assert generated.choices[0].message.content == expected.text
    assert generated.ragglm["plan"] == expected.plan.to_dict()
    assert "instructions" not in plain.ragglm["plan"]
    assert generated.usage.prompt_tokens > plain.usage.prompt_tokens
