"""How many wrong generated answers the checks replace by an extract: one JSON line.

A model's answer to an answerable question is generated from the top retrieved chunks, as
`--mode retrieve` does, and judged right when it holds a gold answer. The pipeline's checks then
keep it or replace it by the cited extract: the key-fact check (a number, code or name the cited
sentences lack), the restatement check and the support check. Per set: wrong answers caught (by
the key-fact check alone and by any check) and right answers replaced (the price of the checks).
Questions the answerability gate refuses never reach the model and are not counted.

Sets: SQuAD 2.0 articles 1-8 and CMRC 2018 trial (answerable questions, seeded samples), with the
packaged SmolLM2-135M as the model (its Chinese is poor: most of its Chinese answers are wrong,
which is what the checks are for).

    python benchmarks/fact_check.py [--squad 120] [--cmrc 120] [--model smollm2]
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
from answer_quality import index_texts
from answerability import LexicalOnly, cmrc_passages, cmrc_source
from shared_data import shared_data_dir

from ragglm.engine import Engine
from ragglm.engine.generate import GenerationResult
from ragglm.index.embedder import Embedder
from ragglm.knowledge_base import KnowledgeBase
from ragglm.pipelines.checks import is_refusal
from ragglm.pipelines.eval import contains_answer, load_qa
from ragglm.pipelines.qa import answer_question

KEY_FACT_REASON = "the generated answer states"


class Recorded:
    """The engine as the pipeline's generator, keeping the text of the last answer it generated."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.name = engine.name
        self.last: GenerationResult | None = None

    def chat(self, messages: list[dict], **options):
        self.last = options.setdefault("result", GenerationResult([]))
        return self.engine.chat(messages, **options)


def judged(kb: KnowledgeBase, generator: Recorded, question: str, answers: list[str], language: str) -> dict | None:
    """The generated answer, whether it is right, and which check (if any) replaced it."""
    hits = kb.search(question, kb.pipeline.config.top_k)
    generator.last = None
    answer = answer_question(question, hits, generator, language, config=kb.pipeline.config,
                             context_mode="retrieve", embedder=kb.pipeline.embedder)
    if generator.last is None or is_refusal(generator.last.text, language):
        return None  # refused before or by the model: nothing generated to check
    fallback = answer.plan.fallback or ""
    return {"right": contains_answer(generator.last.text, answers), "replaced": bool(fallback),
            "key_fact": fallback.startswith(KEY_FACT_REASON)}


def summary(rows: list[dict]) -> dict:
    wrong = [r for r in rows if not r["right"]]
    right = [r for r in rows if r["right"]]

    def share(part, whole):
        return round(len(part) / len(whole), 4) if whole else None

    return {"generated": len(rows), "wrong": len(wrong), "right": len(right),
            "wrong_caught_by_key_facts": share([r for r in wrong if r["key_fact"]], wrong),
            "wrong_caught_by_any_check": share([r for r in wrong if r["replaced"]], wrong),
            "right_replaced_by_key_facts": share([r for r in right if r["key_fact"]], right),
            "right_replaced_by_any_check": share([r for r in right if r["replaced"]], right)}


def squad_kb(limit: int, rng: random.Random) -> tuple[KnowledgeBase, list]:
    """The sampled questions' own paragraphs and as many others (embedding all 8 articles' paragraphs
    takes minutes on a busy machine; the checks only need realistic neighbours)."""
    qa_set = load_qa(shared_data_dir(required=True) / "squad2_dev_articles1-8.json")
    answerable = [item for item in qa_set.items if item.answers]
    picked = rng.sample(answerable, min(limit, len(answerable)))
    own = {item.context_id for item in picked}
    others = rng.sample(sorted(set(qa_set.contexts) - own), min(len(own), len(qa_set.contexts) - len(own)))
    texts = {source: qa_set.contexts[source] for source in sorted(own) + others}
    return index_texts(texts), [(item.question, item.answers) for item in picked]


def cmrc_kb(limit: int, rng: random.Random) -> tuple[KnowledgeBase, list]:
    """Every CMRC passage, indexed lexically: MiniLM's dense score carries no weight in Chinese."""
    passages = cmrc_passages()
    asked = [(q, answers) for p in passages for q, answers, _ in p["qas"]]
    kb = KnowledgeBase(embedder=LexicalOnly())
    for i, passage in enumerate(passages):
        kb.add_text(passage["context"], cmrc_source(i), save=False)
    kb.pipeline.embedder = Embedder()  # the answerability check reads the real embedder's cosines
    return kb, rng.sample(asked, min(limit, len(asked)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=int, default=120, help="answerable SQuAD 2.0 questions sampled")
    parser.add_argument("--cmrc", type=int, default=120, help="CMRC 2018 questions sampled")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.set_num_threads(2)
    generator = Recorded(Engine.from_pretrained(args.model))
    rng = random.Random(args.seed)
    report = {"benchmark": "fact_check", "model": generator.name}
    for name, language, (kb, questions) in [("squad2_en", "en", squad_kb(args.squad, rng)),
                                            ("cmrc2018_zh", "zh", cmrc_kb(args.cmrc, rng))]:
        rows = [judged(kb, generator, q, answers, language) for q, answers in questions]
        report[name] = {"asked": len(questions)} | summary([r for r in rows if r is not None])
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
