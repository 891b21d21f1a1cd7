"""What an extractive answer looks like, in English and Chinese: one JSON line.

Every question is asked with `KnowledgeBase.ask(question, mode="extractive")`, its set's passages as
the documents. Per set and per language: containment of a gold answer in the first sentence of the
answer body (the lines after "Extract from the documents:") and anywhere in it, the body's mean
length in characters (citation marks left out), citation correctness (a cited source holds a gold
answer), the refusal rate on unanswerable questions and the false refusals on answerable ones.

Sets: SQuAD 2.0 articles 1-8 (a seeded sample of its answerable and unanswerable questions); CMRC
2018 trial, its odd-numbered passages (those the Chinese answerability model was not fitted on),
answerable as given, and unanswerable two ways: with the sentences holding the answer cut out of
its passage (benchmarks/answerability.py builds them alike) and as questions of the even-numbered
passages, which the documents do not hold (refusal reported per kind too); the example manuals,
with the questions below.

    python benchmarks/answer_quality.py [--squad 300] [--cmrc 300]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from answerability import cmrc_passages, cmrc_source, cut_round
from shared_data import shared_data_dir

from ragglm.knowledge_base import KnowledgeBase
from ragglm.pipelines.citations import strip_citation_marks
from ragglm.pipelines.eval import contains_answer, load_qa
from ragglm.pipelines.prompts import EXTRACT_NOTE, NOT_FOUND
from ragglm.text.language import detect_language
from ragglm.text.sentences import split_sentences

REPO = Path(__file__).resolve().parents[1]
# (question, gold answers; none: the manuals do not answer it)
MANUAL_QA = [
    ("How long does the filter cartridge last?", ["12 months"]),
    ("What does error code E2 mean?", ["leak"]),
    ("What water pressure does the purifier need?", ["1.0 and 4.0 bar"]),
    ("How long should I flush the system after installation?", ["15 minutes"]),
    ("What temperature damages the membrane?", ["38 degrees"]),
    ("How long is the warranty?", ["24 months"]),
    ("How many devices can connect at once?", ["128"]),
    ("What is the default address of the admin page?", ["192.168.8.1"]),
    ("How long does a factory reset take?", ["two minutes"]),
    ("What does a solid red light mean?", ["No internet connection"]),
    ("What does error code E7 mean?", []),
    ("Who painted the ceiling of the Sistine Chapel?", []),
    ("How long is the warranty of the R7 router?", []),
    ("What is the capital of Australia?", []),
    ("门锁支持哪几种开锁方式？", ["指纹、密码、门卡和机械钥匙"]),
    ("电池可以使用多久？", ["10 个月"]),
    ("录入指纹时每个手指需要按压几次？", ["6 次"]),
    ("门锁最多可以保存多少个指纹？", ["100 个指纹"]),
    ("虚位密码的总长度不能超过多少位？", ["16 位"]),
    ("连续输错密码几次后门锁会锁定？", ["5 次"]),
    ("电量不足提示后还能开锁多少次？", ["200 次"]),
    ("电池完全没电了怎么开门？", ["USB-C 充电宝"]),
    ("门锁主体保修几年？", ["3 年"]),
    ("电子部件的保修期是多久？", ["2 年"]),
    ("门锁的最大发射功率是多少dBm？", []),
    ("门锁支持哪些蓝牙版本？", []),
    ("门锁的工作温度范围是多少？", []),
    ("门锁的重量是多少克？", []),
    ("人脸识别最多能保存多少张人脸？", []),
    ("谁发明了活字印刷术？", []),
]


def index_texts(texts: dict[str, str]) -> KnowledgeBase:
    kb = KnowledgeBase()
    for source, text in texts.items():
        kb.add_text(text, source, save=False)
    return kb


def score(kb: KnowledgeBase, question: str, answers: list[str]) -> dict:
    """One question asked in extractive mode, scored against its gold answers (none: unanswerable)."""
    language = detect_language(question)
    answer = kb.ask(question, mode="extractive")
    refused = answer.text.strip() == NOT_FOUND[language]
    body = _body(answer.text, language) if not refused else ""
    first = split_sentences(body)
    row = {"language": language, "answerable": bool(answers), "refused": refused}
    if answers and not refused:
        row |= {"first": contains_answer(body[first[0][0]:first[0][1]] if first else body, answers),
                "anywhere": contains_answer(body, answers), "length": len(body),
                "cited": bool(answer.citations),
                "cited_ok": any(contains_answer(answer.sources[c.id - 1].text, answers) for c in answer.citations)}
    return row


def _body(text: str, language: str) -> str:
    """The quoted passages without the leading note and the citation marks."""
    note = EXTRACT_NOTE[language]
    text = text.split(note, 1)[1] if note in text else text
    return " ".join(strip_citation_marks(line) for line in text.strip().splitlines())


def summary(rows: list[dict]) -> dict:
    answerable = [r for r in rows if r["answerable"]]
    answered = [r for r in answerable if not r["refused"]]
    cited = [r for r in answered if r["cited"]]
    unanswerable = [r for r in rows if not r["answerable"]]

    def share(part, whole):
        return round(len(part) / len(whole), 4) if whole else None

    return {
        "questions": len(rows), "answerable": len(answerable), "unanswerable": len(unanswerable),
        # containment over all answerable questions: a false refusal contains nothing
        "first_sentence_containment": share([r for r in answered if r["first"]], answerable),
        "containment": share([r for r in answered if r["anywhere"]], answerable),
        "mean_answer_chars": round(sum(r["length"] for r in answered) / len(answered), 1) if answered else None,
        "citation_correctness": share([r for r in cited if r["cited_ok"]], cited),
        "refusal_rate_unanswerable": share([r for r in unanswerable if r["refused"]], unanswerable),
        "false_refusal_rate": share([r for r in answerable if r["refused"]], answerable),
    } | {f"refusal_rate_{kind}": share([r for r in unanswerable if r.get("kind") == kind and r["refused"]],
                                       [r for r in unanswerable if r.get("kind") == kind])
         for kind in sorted({r["kind"] for r in unanswerable if "kind" in r})}


def squad_rows(limit: int, rng: random.Random) -> list[dict]:
    qa_set = load_qa(shared_data_dir(required=True) / "squad2_dev_articles1-8.json")
    kb = index_texts(qa_set.contexts)
    items = rng.sample(qa_set.items, min(limit, len(qa_set.items)))
    return [score(kb, item.question, item.answers) for item in items]


def cmrc_rows(limit: int, rng: random.Random) -> list[dict]:
    """Odd-numbered passages: answerable questions as given; unanswerable, one question per passage
    with its answer cut out ("cut"), and as many questions of even-numbered passages, which the
    documents do not hold ("absent")."""
    every = cmrc_passages()
    passages = {i: p for i, p in enumerate(every) if i % 2 == 1}
    full = index_texts({cmrc_source(i): p["context"] for i, p in passages.items()})
    answerable = [(q, answers) for p in passages.values() for q, answers, _ in p["qas"]]
    rows = [score(full, q, answers) for q, answers in rng.sample(answerable, min(limit, len(answerable)))]
    texts, asked = cut_round(list(passages.values()), 0)
    cut = index_texts(texts)
    for question, answers in asked.values():
        if _unanswered(cut, question, answers):
            rows.append(score(cut, question, []) | {"kind": "cut"})
    absent = [(q, answers) for i, p in enumerate(every) if i % 2 == 0 for q, answers, _ in p["qas"][:1]]
    for question, answers in rng.sample(absent, min(len(asked), len(absent))):
        if _unanswered(full, question, answers):
            rows.append(score(full, question, []) | {"kind": "absent"})
    return rows


def _unanswered(kb: KnowledgeBase, question: str, answers: list[str]) -> bool:
    # another passage may hold the answer too: then the question is not unanswerable there
    return not any(contains_answer(hit.text, answers) for hit in kb.search(question, kb.settings.top_k))


def manual_rows(cache: Path) -> list[dict]:
    kb = KnowledgeBase(cache / "manuals")
    kb.add(REPO / "examples" / "manuals")
    return [score(kb, question, answers) for question, answers in MANUAL_QA]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--squad", type=int, default=300, help="SQuAD 2.0 questions sampled")
    parser.add_argument("--cmrc", type=int, default=300, help="answerable CMRC questions sampled")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ragglm-answer-quality"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the CPUs are shared; MiniLM on short texts runs faster on one thread than on contended two
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rng = random.Random(args.seed)
    sets = {"squad2_en": squad_rows(args.squad, rng), "cmrc2018_zh": cmrc_rows(args.cmrc, rng)}
    manuals = manual_rows(cache)
    sets |= {f"manuals_{lang}": [r for r in manuals if r["language"] == lang] for lang in ("en", "zh")}
    report = {"benchmark": "answer_quality", "mode": "extractive"}
    report |= {name: summary(rows) for name, rows in sets.items()}
    for lang in ("en", "zh"):
        report[lang] = summary([r for rows in sets.values() for r in rows if r["language"] == lang])
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
