"""`ragglm serve`'s app on a loopback port, driven by the official openai client and raw HTTP."""

from __future__ import annotations

import concurrent.futures
import json

import httpx
import openai
import pytest

from ragglm.server import KB_MODEL_ID, BackgroundServer, ServerLimits, create_app
from tests.conftest import streamed_ask

KEY = "test-key"
QUESTION = "How long does the AquaPure W3 filter last?"


@pytest.fixture(scope="module")
def server(manuals_kb):
    app = create_app(manuals_kb, api_key=KEY, limits=ServerLimits(max_new_tokens=64, max_body_bytes=64_000))
    with BackgroundServer(app, host="127.0.0.1", port=0) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key=KEY, max_retries=0, timeout=300)


def ask(client, model=KB_MODEL_ID, content=QUESTION, **kwargs):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          **kwargs)


def health(server) -> dict:
    response = httpx.get(f"http://127.0.0.1:{server.port}/health")
    assert response.status_code == 200
    return response.json()


def test_health_and_models(server, client, manuals_kb):
    status = health(server)
    assert status["status"] == "ok" and status["knowledge_base"]["chunks"] == len(manuals_kb)
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {"smollm2", KB_MODEL_ID, manuals_kb.store.embedder.name}
    assert models[KB_MODEL_ID].knowledge_base is True
    assert models[manuals_kb.store.embedder.name].embeddings is True
    assert client.models.retrieve("smollm2").id == "smollm2"


def test_completion_answers_with_citations(client, manuals_kb):
    completion = ask(client, max_tokens=12)
    expected = streamed_ask(manuals_kb, QUESTION)  # the same pipeline in-process, same budget, greedy
    assert completion.choices[0].message.content == expected.text
    assert completion.choices[0].finish_reason in ("stop", "length")
    citations = completion.citations
    assert citations, "the answer carries its citations"
    # named within the folder the manuals were added from, not by the server's paths
    assert [c["source"] for c in citations] == [c.source.rsplit("/", 1)[1] for c in expected.citations]
    assert all(set(c) >= {"id", "source", "page", "text"} for c in citations)
    # an extract is counted too: the question in, the quoted text out
    generated = expected.timings.get("generated_tokens") or manuals_kb.generator.count_tokens(expected.text)
    assert completion.usage.completion_tokens == generated


def test_streamed_completion(client, manuals_kb):
    stream = ask(client, max_tokens=12, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    expected = streamed_ask(manuals_kb, QUESTION)
    # a small model answers by extract in auto mode, sent whole; generated answers stream token by token
    assert len(pieces) >= (1 if expected.mode == "extractive" else 3)
    assert "".join(pieces).strip() == expected.text
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.citations and final.citations[0]["source"]
    assert chunks[-1].usage.completion_tokens >= len(pieces) - 1


def test_plain_model_and_stop(client, smollm2):
    messages = [{"role": "user", "content": "Name a fruit."}]
    expected = smollm2.chat(messages, max_new_tokens=8).text
    completion = ask(client, model="smollm2", content="Name a fruit.", max_tokens=8)
    assert completion.choices[0].message.content == expected
    assert completion.citations == []
    stop = " " + expected.split()[2]
    cut = ask(client, model="smollm2", content="Name a fruit.", max_tokens=8, stop=[stop])
    assert cut.choices[0].message.content == expected[: expected.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_wrong_or_missing_api_key_is_refused(server):
    wrong = openai.OpenAI(base_url=server.base_url, api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        ask(wrong, max_tokens=4)
    assert info.value.status_code == 401
    response = httpx.get(f"{server.base_url}/models")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_malformed_bodies_get_400_and_the_server_keeps_serving(server, client):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = f"{server.base_url}/chat/completions"
    for body in [b"{not json", b'{"model": "ragglm"}', b'{"model": "ragglm", "messages": "hi"}',
                 json.dumps({"model": "ragglm", "messages": [{"role": "robot", "content": "x"}]}).encode()]:
        response = httpx.post(url, content=body, headers=headers)
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=KB_MODEL_ID, messages=[])
    assert health(server)["status"] == "ok"
    assert ask(client, model="smollm2", content="Name a fruit.", max_tokens=4).choices[0].message.content


def test_limits_and_unknown_models(server, client):
    with pytest.raises(openai.BadRequestError, match="limit of 64"):
        ask(client, max_tokens=65)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        ask(client, model="gpt-4o", max_tokens=4)
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    big = json.dumps({"model": "smollm2", "messages": [{"role": "user", "content": "x" * 70_000}]})
    response = httpx.post(f"{server.base_url}/chat/completions", content=big, headers=headers)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit is enforced while reading
        yield big.encode()

    response = httpx.post(f"{server.base_url}/chat/completions", content=chunked(), headers=headers)
    assert response.status_code == 413
    assert httpx.get(f"http://127.0.0.1:{server.port}/nowhere").json()["error"]["type"] == "not_found_error"


def test_concurrent_requests_are_queued_without_mixing_up_the_cache(client, smollm2):
    prompts = ["Name a fruit.", "Name a colour.", "Say hello.", "Name an animal."] * 2
    expected = {p: smollm2.chat([{"role": "user", "content": p}], max_new_tokens=6).text for p in set(prompts)}

    def one(prompt: str) -> str:
        if prompts.index(prompt) % 2:
            stream = ask(client, model="smollm2", content=prompt, max_tokens=6, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return ask(client, model="smollm2", content=prompt, max_tokens=6).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(one, prompts))
    assert answers == [expected[p] for p in prompts]


def test_remote_backend_against_the_server(server, manuals_kb, monkeypatch):
    """KnowledgeBase(model="openai:...") retrieves locally and generates on the server."""
    from ragglm import KnowledgeBase
    from ragglm.engine.remote import RemoteGenerator

    monkeypatch.setenv("RAGGLM_REMOTE_API_KEY", KEY)
    remote_kb = KnowledgeBase(model=f"openai:{server.base_url}", top_k=2, max_new_tokens=12)
    remote_kb.store = manuals_kb.store  # the same index, without embedding the manuals twice
    assert isinstance(remote_kb.generator, RemoteGenerator)
    assert remote_kb.generator.name == "smollm2" and remote_kb.generator.languages == ("en",)
    # the planner cannot size a remote model, so compare both on retrieved chunks
    local = manuals_kb.ask(QUESTION, mode="retrieve")
    answer = remote_kb.ask(QUESTION, mode="retrieve")
    assert answer.text == local.text
    assert [c.source for c in answer.citations] == [c.source for c in local.citations]
    assert answer.citations and answer.model == "smollm2"
    streamed: list[str] = []
    remote_streamed = remote_kb.ask(QUESTION, mode="retrieve", on_text=streamed.append)
    assert remote_streamed.text == "".join(streamed)
    assert remote_streamed.text == manuals_kb.ask(QUESTION, mode="retrieve", on_text=lambda piece: None).text
    assert len(streamed) >= 3


def test_remote_backend_errors_name_the_server(server, monkeypatch):
    from ragglm.engine.remote import RemoteGenerator
    from ragglm.errors import RemoteGeneratorError

    monkeypatch.delenv("RAGGLM_REMOTE_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RemoteGeneratorError, match="401"):
        RemoteGenerator.from_spec(f"openai:{server.base_url}#smollm2").chat(
            [{"role": "user", "content": "hi"}], max_new_tokens=2)
    with pytest.raises(RemoteGeneratorError, match="cannot reach"):
        _ = RemoteGenerator("http://127.0.0.1:9/v1").languages
    with pytest.raises(RemoteGeneratorError, match="http://"):
        RemoteGenerator.from_spec("openai:127.0.0.1:8000/v1")
