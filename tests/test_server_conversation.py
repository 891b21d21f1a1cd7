"""The `ragglm` model takes the whole conversation over HTTP: a follow-up is answered from the documents
with citations, through the official openai client and through LangChain's ChatOpenAI."""

from __future__ import annotations

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI

from ragglm.integrations.langchain import citations_from
from ragglm.server import KB_MODEL_ID, BackgroundServer, ServerLimits, create_app

KEY = "test-key"
QUESTION = "How long does the AquaPure W3 filter last?"
FOLLOW_UP = "How do I replace it?"
MANUAL = "aquapure-w3-manual.pdf"


@pytest.fixture(scope="module")
def server(manuals_kb):
    app = create_app(manuals_kb, api_key=KEY, limits=ServerLimits(max_new_tokens=64))
    with BackgroundServer(app, host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=300)


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
