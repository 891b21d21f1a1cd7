"""ragglm inside LangChain: a plain LCEL chain, a retrieval chain, and a knowledge-base-bound LLM.

    python examples/langchain_chain.py [--model smollm2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import PromptTemplate
from langchain_core.runnables import RunnablePassthrough

from ragglm import KnowledgeBase
from ragglm.integrations.langchain import RagGLM, RagGLMRetriever

MANUALS = Path(__file__).resolve().parent / "manuals"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2", help="alias, .gguf, folder or openai:http://host:port/v1")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()

    llm = RagGLM(model=args.model, max_new_tokens=args.max_new_tokens)

    # 1. A plain LCEL chain: prompt | LLM | parser, streamed token by token.
    chain = PromptTemplate.from_template("Explain in one sentence what a {thing} is.") | llm | StrOutputParser()
    print("== LCEL chain ==")
    for piece in chain.stream({"thing": "water filter"}):
        print(piece, end="", flush=True)
    print()

    # 2. A retrieval chain: the retriever's Documents fill the prompt's context.
    kb = KnowledgeBase(model=args.model)
    kb.add(MANUALS)
    retriever = RagGLMRetriever(knowledge_base=kb, k=2)

    def as_context(documents) -> str:
        return "\n\n".join(f"({d.metadata['source'].rsplit('/', 1)[-1]}, page {d.metadata['page']}) "
                           f"{d.page_content}" for d in documents)

    prompt = PromptTemplate.from_template(
        "Answer from the context only.\n\nContext:\n{context}\n\nQuestion: {question}\nAnswer:")
    rag_chain = {"context": retriever | as_context, "question": RunnablePassthrough()} | prompt | llm | StrOutputParser()
    question = "How do I reset the R7 router to factory settings?"
    print("\n== Retrieval chain ==")
    print(rag_chain.invoke(question))
    for doc in retriever.invoke(question):
        print(f"  retrieved {doc.metadata['source']} page={doc.metadata['page']} score={doc.metadata['score']:.3f}")

    # 3. The LLM bound to the knowledge base: ragglm's own prompt, with checked citations.
    bot = RagGLM(knowledge_base=kb, max_new_tokens=args.max_new_tokens)
    result = bot.generate([question])
    generation = result.generations[0][0]
    print("\n== Knowledge-base LLM ==")
    print(generation.text)
    for citation in generation.generation_info["citations"]:
        print(f"  [{citation['id']}] {citation['source']} page={citation['page']}")


if __name__ == "__main__":
    main()
