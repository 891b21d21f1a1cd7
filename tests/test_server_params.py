"""Every chat-completion parameter is honoured (an observable effect) or refused with a 400 naming it;
/v1/embeddings through the official openai client; CORS only for the origins allowed."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest
from fastapi.testclient import TestClient

from ragglm.server import KB_MODEL_ID, create_app
from ragglm.web.documents import document_id
from tests.conftest import SERVER_KEY as KEY

PROMPT = "Name a fruit."
QUESTION = "How long does the AquaPure W3 filter last?"
MESSAGES = [{"role": "user", "content": PROMPT}]


@pytest.fixture(scope="module")
def server(manuals_server):
    return manuals_server


@pytest.fixture(scope="module")
def client(manuals_client):
    return manuals_client


def chat(client, model="smollm2", **kwargs) -> str:
    completion = client.chat.completions.create(model=model, messages=MESSAGES, **kwargs)
    return completion.choices[0].message.content


def refused(client, model="smollm2", messages=MESSAGES, **kwargs) -> dict:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=messages, max_tokens=4, **kwargs)
    return info.value.body


_greedy: dict[int, str] = {}


def greedy(engine, tokens: int = 8) -> str:
    if tokens not in _greedy:
        _greedy[tokens] = engine.chat(MESSAGES, max_new_tokens=tokens).text
    return _greedy[tokens]


# --- honoured --------------------------------------------------------------------------------------

def test_top_p_keeps_the_most_likely_token(client, smollm2):
    assert chat(client, max_tokens=8, temperature=1.0, top_p=0.0001) == greedy(smollm2)
    assert chat(client, max_tokens=8, temperature=1.0, top_p=0) == greedy(smollm2)
    assert refused(client, top_p=5)["param"] == "top_p"


def test_top_k_one_is_greedy(client, smollm2):
    assert chat(client, max_tokens=8, temperature=1.5, extra_body={"top_k": 1}) == greedy(smollm2)


def test_seed_repeats_a_sampled_answer(client, smollm2):
    sampled = smollm2.chat(MESSAGES, max_new_tokens=8, temperature=1.0, seed=7).text
    assert chat(client, max_tokens=8, temperature=1.0, seed=7) == sampled
    assert chat(client, max_tokens=8, temperature=1.0, seed=7) == sampled


def test_repetition_penalty_reaches_the_engine(client, smollm2):
    expected = smollm2.chat(MESSAGES, max_new_tokens=8, repetition_penalty=3.0).text
    assert chat(client, max_tokens=8, extra_body={"repetition_penalty": 3.0}) == expected


def test_max_completion_tokens_bounds_the_answer(client, smollm2):
    completion = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_completion_tokens=3)
    assert completion.usage.completion_tokens == 3 and completion.choices[0].finish_reason == "length"
    assert greedy(smollm2).startswith(completion.choices[0].message.content)
    assert refused(client, max_completion_tokens=65)["param"] == "max_completion_tokens"


def test_temperature_out_of_range(client):
    assert refused(client, temperature=2.5)["param"] == "temperature"


def test_at_most_four_stop_strings(client, smollm2):
    words = greedy(smollm2).split()
    assert chat(client, max_tokens=8, stop=["zzz", "yyy", "xxx", " " + words[1]]) == words[0]
    assert refused(client, stop=["a", "b", "c", "d", "e"])["param"] == "stop"
    assert refused(client, stop=[""])["param"] == "stop"


def test_bookkeeping_fields_are_accepted(client, smollm2):
    assert chat(client, max_tokens=8, user="u-1", metadata={"team": "a"}, store=False,
                parallel_tool_calls=False, presence_penalty=0, frequency_penalty=0,
                response_format={"type": "text"}, stream_options=None) == greedy(smollm2)


# --- refused ---------------------------------------------------------------------------------------

TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.mark.parametrize(("param", "value"), [
    ("presence_penalty", 0.5), ("frequency_penalty", 0.5), ("logit_bias", {"1": 5}), ("logprobs", True),
    ("top_logprobs", 2), ("functions", [TOOL["function"]]), ("n", 2),
])
def test_unsupported_parameters_are_refused(client, param, value):
    body = refused(client, **{param: value})
    assert body["param"] == param and body["type"] == "invalid_request_error"


def test_tools_and_formats_on_the_documents_model_name_the_plain_model(client):
    # honoured by the plain model (tests/test_server_tools.py); the documents model answers in prose
    for name, value in (("response_format", {"type": "json_object"}), ("tools", [TOOL])):
        body = refused(client, model=KB_MODEL_ID, **{name: value})
        assert body["param"] == name and "plain model" in body["message"]


def test_unknown_fields_are_refused_by_name(client):
    assert refused(client, extra_body={"best_of": 3})["param"] == "best_of"
    message = {"role": "user", "content": PROMPT, "tool_calls": [{"id": "x"}]}
    assert refused(client, messages=[message])["param"] == "messages.0.tool_calls"


def test_image_parts_are_refused(client):
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
    body = refused(client, messages=[{"role": "user", "content": content}])
    assert body["param"] == "messages.0.content.1" and "image_url" in body["message"]


def test_sampling_on_the_documents_model_names_the_plain_model(client):
    for name, value in (("top_p", 0.5), ("top_k", 5)):
        body = refused(client, model=KB_MODEL_ID, extra_body={name: value})
        assert body["param"] == name and "plain model" in body["message"]


# --- the documents model's answer ------------------------------------------------------------------

def test_citations_name_files_relative_to_the_knowledge_base(client, manuals_kb):
    completion = client.chat.completions.create(model=KB_MODEL_ID, max_tokens=12,
                                                messages=[{"role": "user", "content": QUESTION}])
    assert [c["source"] for c in completion.citations][0] == "aquapure-w3-manual.pdf"
    assert all(not c["source"].startswith("/") for c in completion.citations)
    # the document API's id of the file, by which the web page finds the cited document
    pdf = next(s for s in manuals_kb.sources if s.endswith("aquapure-w3-manual.pdf"))
    assert completion.citations[0]["document"] == document_id(pdf)
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


# --- embeddings ------------------------------------------------------------------------------------

def test_embeddings_through_the_openai_client(client, manuals_kb):
    embedder = manuals_kb.store.embedder
    texts = ["filter cartridge", "reset the router"]
    assert embedder.name in {m.id for m in client.models.list().data}
    expected = embedder.embed(texts)
    reply = client.embeddings.create(model=embedder.name, input=texts)  # the client asks for base64
    assert [d.index for d in reply.data] == [0, 1]
    np.testing.assert_allclose(np.array([d.embedding for d in reply.data]), expected, atol=1e-5)
    assert reply.usage.prompt_tokens == reply.usage.total_tokens > len(texts)
    as_floats = client.embeddings.create(model=embedder.name, input="filter cartridge", encoding_format="float")
    np.testing.assert_allclose(as_floats.data[0].embedding, expected[0], atol=1e-5)


def test_embeddings_refuse_token_ids_and_other_models(client, manuals_kb):
    name = manuals_kb.store.embedder.name
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=name, input=[[101, 2023]])
    assert info.value.body["param"] == "input.0"
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=name, input="x", dimensions=3)
    assert info.value.body["param"] == "dimensions"
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="text-embedding-3-small", input="x")


# --- CORS ------------------------------------------------------------------------------------------

ALLOWED = "https://app.example.com"


def preflight(http: TestClient, origin: str) -> httpx.Response:
    return http.options("/v1/chat/completions", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})


def test_cors_preflight_for_an_allowed_origin_only(manuals_kb):
    with TestClient(create_app(manuals_kb, api_key=KEY, cors_origins=[ALLOWED])) as http:
        allowed = preflight(http, ALLOWED)
        assert allowed.status_code in (200, 204)
        assert allowed.headers["access-control-allow-origin"] == ALLOWED
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
        denied = preflight(http, "https://evil.example.com")
        assert "access-control-allow-origin" not in denied.headers
        listed = http.get("/v1/models", headers={"Origin": ALLOWED, "Authorization": f"Bearer {KEY}"})
        assert listed.status_code == 200 and listed.headers["access-control-allow-origin"] == ALLOWED


def test_no_cors_headers_by_default(manuals_kb):
    with TestClient(create_app(manuals_kb)) as http:
        response = preflight(http, ALLOWED)
        assert response.status_code == 405  # no route answers OPTIONS
        assert not any(name.startswith("access-control-") for name in response.headers)
