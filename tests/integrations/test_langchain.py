"""RagGLM and RagGLMRetriever used through real LangChain objects on the packaged SmolLM2."""

from __future__ import annotations

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.llms import LLM
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.retrievers import BaseRetriever

from ragglm.integrations.answering import chat_generator
from ragglm.integrations.langchain import RagGLM, RagGLMRetriever, shared_generator
from tests.conftest import streamed_ask


class TokenRecorder(BaseCallbackHandler):
    def __init__(self):
        self.tokens: list[str] = []
        self.started = self.ended = 0

    def on_llm_start(self, serialized, prompts, **kwargs):
        self.started += 1

    def on_llm_new_token(self, token, **kwargs):
        self.tokens.append(token)

    def on_llm_end(self, response, **kwargs):
        self.ended += 1


@pytest.fixture(scope="module")
def llm(smollm2):
    # share the session's engine instead of loading the model again
    from ragglm.integrations import langchain as module

    module._loaded[("smollm2", None, "cpu")] = smollm2
    return RagGLM(model="smollm2", max_new_tokens=8)


_references: dict[tuple[str, int], str] = {}


def reference(engine, prompt: str, max_new_tokens: int = 8) -> str:
    """The engine's own greedy answer for the prompt, as the ground truth (computed once)."""
    key = (prompt, max_new_tokens)
    if key not in _references:
        _references[key] = engine.chat([{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens).text
    return _references[key]


def test_defaults_and_identity():
    llm = RagGLM()
    assert isinstance(llm, LLM)
    assert (llm.model, llm.quant, llm.knowledge_base, llm.max_new_tokens, llm.temperature) == \
        ("smollm2", None, None, 256, 0.0)
    assert llm._llm_type == "ragglm"
    assert llm._identifying_params["model"] == "smollm2"


def test_invoke_matches_the_engine(llm, smollm2):
    text = llm.invoke("Name a fruit.")
    assert text == reference(smollm2, "Name a fruit.")
    assert text.strip()


def test_stream_yields_several_chunks_and_fires_callbacks(llm, smollm2):
    recorder = TokenRecorder()
    chunks = list(llm.stream("Name a fruit.", config={"callbacks": [recorder]}))
    assert len([c for c in chunks if c]) >= 3
    assert "".join(chunks) == reference(smollm2, "Name a fruit.")
    assert "".join(recorder.tokens) == "".join(chunks)
    assert len(recorder.tokens) == len(chunks)
    assert (recorder.started, recorder.ended) == (1, 1)


def test_stop_strings_cut_invoke_and_stream(llm, smollm2):
    full = reference(smollm2, "Name a fruit.")
    words = full.split()
    assert len(words) >= 3, full
    stop = " " + words[2]
    expected = full[: full.index(stop)]
    assert llm.invoke("Name a fruit.", stop=[stop]) == expected
    assert "".join(llm.stream("Name a fruit.", stop=[stop])) == expected


def test_batch_answers_each_prompt(llm, smollm2):
    prompts = ["Name a fruit.", "Name a colour."]
    assert llm.batch(prompts) == [reference(smollm2, p) for p in prompts]


def test_lcel_chain(llm, smollm2):
    prompt = PromptTemplate.from_template("Name a {thing}.")
    chain = prompt | llm | StrOutputParser()
    assert chain.invoke({"thing": "fruit"}) == reference(smollm2, "Name a fruit.")
    assert "".join(chain.stream({"thing": "fruit"})) == reference(smollm2, "Name a fruit.")


def test_retriever_documents_carry_source_page_and_score(manuals_kb):
    retriever = RagGLMRetriever(knowledge_base=manuals_kb, k=3)
    assert isinstance(retriever, BaseRetriever)
    docs = retriever.invoke("How long does the AquaPure W3 filter last?")
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    hits = manuals_kb.search("How long does the AquaPure W3 filter last?", 3)
    for doc, hit in zip(docs, hits, strict=True):
        assert doc.page_content == hit.text
        assert doc.metadata["source"] == hit.source
        assert doc.metadata["page"] == hit.page
        assert doc.metadata["score"] == pytest.approx(hit.score)
    assert docs[0].metadata["source"].endswith("aquapure-w3-manual.pdf")
    assert isinstance(docs[0].metadata["page"], int)  # PDF hits know their page
    assert [d.metadata["score"] for d in docs] == sorted((d.metadata["score"] for d in docs), reverse=True)


def test_llm_bound_to_a_knowledge_base_answers_with_citations(manuals_kb):
    bot = RagGLM(knowledge_base=manuals_kb, max_new_tokens=12)
    question = "How long does the AquaPure W3 filter last?"
    result = bot.generate([question])
    generation = result.generations[0][0]
    expected = streamed_ask(manuals_kb, question)
    assert generation.text == expected.text
    citations = generation.generation_info["citations"]
    assert citations and [c["source"] for c in citations] == [c.source for c in expected.citations]
    assert all(c["source"].startswith(str(manuals_kb.sources[0]).rsplit("/", 1)[0]) for c in citations)
    recorder = TokenRecorder()
    streamed = list(bot.stream(question, config={"callbacks": [recorder]}))
    # a small model answers by extract in auto mode, sent whole; generated answers stream token by token
    assert len([piece for piece in streamed if piece]) >= (1 if expected.mode == "extractive" else 3)
    assert "".join(streamed).strip() == expected.text
    assert "".join(recorder.tokens) == "".join(streamed)


def test_retrieval_chain_with_the_retriever(llm, manuals_kb, smollm2):
    retriever = RagGLMRetriever(knowledge_base=manuals_kb, k=1)
    prompt = PromptTemplate.from_template("Context: {context}\nQuestion: {question}\nAnswer:")

    def context(question: str) -> str:
        return "\n".join(d.page_content for d in retriever.invoke(question))

    chain = {"context": context, "question": lambda q: q} | prompt | llm | StrOutputParser()
    question = "What does error E2 mean?"
    expected_prompt = f"Context: {context(question)}\nQuestion: {question}\nAnswer:"
    assert chain.invoke(question) == reference(smollm2, expected_prompt)


def test_closing_a_stream_early_frees_the_engine(llm, smollm2):
    stream = llm.stream("Count from one to twenty.", max_new_tokens=40)
    first = next(stream)
    assert first
    stream.close()
    # the next user gets the engine (same lock) and a complete, correct answer
    outcome = chat_generator(shared_generator("smollm2", None, "cpu"),
                             [{"role": "user", "content": "Name a fruit."}], max_new_tokens=8, temperature=0.0)
    assert outcome.text == reference(smollm2, "Name a fruit.")


def test_retriever_honours_k_per_call_and_refuses_other_arguments(manuals_kb):
    retriever = RagGLMRetriever(knowledge_base=manuals_kb, k=3)
    question = "How long does the AquaPure W3 filter last?"
    docs = retriever.invoke(question, k=1)
    assert len(docs) == 1 and docs[0].page_content == manuals_kb.search(question, 1)[0].text
    assert len(retriever.invoke(question)) == 3
    with pytest.raises(ValueError, match="filter"):
        retriever.invoke(question, filter={"source": "x"})
    with pytest.raises(ValueError, match="positive"):
        retriever.invoke(question, k=0)


def test_max_tokens_is_max_new_tokens(llm, smollm2):
    short = reference(smollm2, "Name a fruit.", max_new_tokens=3)
    assert RagGLM(model="smollm2", max_tokens=3).max_new_tokens == 3
    assert RagGLM(model="smollm2", max_tokens=3).invoke("Name a fruit.") == short
    assert llm.invoke("Name a fruit.", max_tokens=3) == short
    with pytest.raises(ValueError, match="disagree"):
        RagGLM(max_tokens=3, max_new_tokens=4)


def test_top_p_and_top_k_reach_the_engine(llm, smollm2):
    # at temperature 1 only the most likely token survives either filter: the greedy text
    assert llm.invoke("Name a fruit.", temperature=1.0, top_p=0.0001) == reference(smollm2, "Name a fruit.")
    assert RagGLM(model="smollm2", max_new_tokens=8, temperature=1.5, top_k=1).invoke("Name a fruit.") == \
        reference(smollm2, "Name a fruit.")
    sampled = smollm2.chat([{"role": "user", "content": "Name a fruit."}], max_new_tokens=8, temperature=1.0,
                           seed=3).text
    assert llm.invoke("Name a fruit.", temperature=1.0, seed=3) == sampled


def test_unknown_or_out_of_range_settings_are_refused(llm, manuals_kb):
    with pytest.raises(ValueError, match="max_tokenz"):
        RagGLM(max_tokenz=5)
    with pytest.raises(ValueError, match="top_p"):
        RagGLM(top_p=5)
    with pytest.raises(ValueError, match="presence_penalty"):
        llm.invoke("Name a fruit.", presence_penalty=0.5)
    with pytest.raises(ValueError, match="top_p"):
        RagGLM(knowledge_base=manuals_kb).invoke("How long does the filter last?", top_p=0.5)
