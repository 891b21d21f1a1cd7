"""The answerability check on SQuAD 2.0 and the example manuals: fit, held-out figures, one JSON line.

Every SQuAD paragraph is one document (as `ragglm eval` indexes them); each question is retrieved
top-4 and its features computed as the answering pipeline does. The logistic model is fitted on
articles 1, 3, 5, 7 and scored on 2, 4, 6, 8 and on all eight: ROC AUC, and the figures of
`ragglm eval --mode extractive` when its refusals come from the model (containment, citation
correctness, refusal on unanswerable questions, false refusals). Plain questions about the example
manuals must not be refused: their lowest probability is reported against the threshold.

    python benchmarks/answerability.py              # the packaged model: one JSON line
    python benchmarks/answerability.py --fit        # refit; prints the constants to paste
    python benchmarks/answerability.py --zh [--fit] # the Chinese model, on CMRC 2018 and DuReader

Chinese sets have no unanswerable questions, so they are made: a CMRC 2018 question asked of the
passages with the sentences holding its answer cut out (its own passage's remainder is the hard
negative, as SQuAD 2.0's are), or of the passages other than its own; a DuReader question asked of
the other questions' documents, its answer document kept without the paragraph holding the answer.
Pairs where a retrieved chunk still holds a gold answer are dropped. Even-numbered passages (and
DuReader questions) fit the model, odd-numbered ones are held out.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from shared_data import shared_data_dir

from ragglm.documents import Hit
from ragglm.index.embedder import Embedder
from ragglm.knowledge_base import KnowledgeBase
from ragglm.pipelines.answerability import (
    FEATURES,
    SupportModel,
    answer_probability,
    support_features,
    support_model_for,
)
from ragglm.pipelines.eval import contains_answer, load_qa
from ragglm.pipelines.extract import extractive_answer, rank_sentences
from ragglm.text.sentences import split_sentences

REPO = Path(__file__).resolve().parents[1]
TRAIN_ARTICLES = (1, 3, 5, 7)
# Plain questions the example manuals answer (refusing any of them is a failure) and some they do not.
MANUAL_ANSWERED = [
    "How long does the filter cartridge last?",
    "What does error code E2 mean?",
    "How do I reset the router to factory settings?",
    "What is the default address of the admin page?",
    "How many devices can connect at once?",
    "Which Wi-Fi bands does the R7 support?",
    "What does a solid red light mean?",
    "How often should the filter be replaced?",
    "What is the default admin password?",
    "How long does a factory reset take?",
    "What water pressure does the purifier need?",
    "How much clean water does the purifier deliver per minute?",
    "How long should I flush the system after installation?",
    "What does error code E3 mean?",
    "How long is the warranty?",
    "How do I replace the cartridge?",
    "What temperature damages the membrane?",
    "How much free space is needed above the unit?",
]
MANUAL_UNANSWERED = [
    "Which football club won the 1998 championship final?",
    "Who painted the ceiling of the Sistine Chapel?",
    "What is the capital of Australia?",
    "What does error code E7 mean?",
    "How long is the warranty of the R7 router?",
]


def squad_rows(cache: Path) -> list[dict]:
    """Per question: its article, answerability, features, and how the extract scores."""
    cached = cache / "squad_rows.json"
    if cached.exists():
        return json.loads(cached.read_text())
    qa_set = load_qa(shared_data_dir(required=True) / "squad2_dev_articles1-8.json")
    kb = KnowledgeBase(cache / "kb")
    for context_id, text in qa_set.contexts.items():
        kb.add_text(text, context_id, save=False)
    kb.save()
    titles = list(dict.fromkeys(cid.rsplit("#", 1)[0] for cid in qa_set.contexts))
    embedder = kb.store.embedder
    rows = []
    for item in qa_set.items:
        hits = kb.search(item.question, kb.settings.top_k)
        ranked = rank_sentences(item.question, hits, language="en")
        answer = extractive_answer(item.question, hits, "en", 3, -1.0, ranked)
        features = support_features(item.question, ranked, hits, embedder)
        cited_ok = any(contains_answer(hits[c.id - 1].text, item.answers) for c in answer.citations)
        rows.append({"article": titles.index(item.context_id.rsplit("#", 1)[0]) + 1, "answerable": item.answerable,
                     "features": features, "contained": item.answerable and contains_answer(answer.text, item.answers),
                     "cited": bool(answer.citations), "cited_ok": item.answerable and cited_ok,
                     "no_match": not ranked or ranked[0].score <= 0.0, "question": item.question,
                     "sentence": ranked[0].text if ranked else "", "hits": [hit.text for hit in hits],
                     "index": ranked[0].index if ranked else 0, "number": ranked[0].number if ranked else 1})
    cached.write_text(json.dumps(rows))
    return rows


def manual_probabilities(model: SupportModel, cache: Path, questions: list[str]) -> dict:
    kb = KnowledgeBase(cache / "manuals")
    kb.add(REPO / "examples" / "manuals")
    out = {}
    for question in questions:
        hits = kb.search(question, kb.settings.top_k)
        ranked = rank_sentences(question, hits, language=model.language)
        features = support_features(question, ranked, hits, kb.store.embedder, language=model.language)
        p = answer_probability(features, model) if ranked and ranked[0].score > 0.0 else 0.0
        out[question] = round(p, 3)
    return out


ZH_FEATURES = ("overlap", "negation", "sentence_cosine", "best_cosine", "coverage", "char_coverage",
               "missing_names", "missing_names_anywhere", "kind_missing")
# Chinese: CMRC questions per passage asked of its remainder once the answer is cut out.
CUT_ROUNDS = 2
# Plain questions the Chinese example manual answers, and some it does not (near misses first).
MANUAL_ZH_ANSWERED = [
    "门锁支持哪几种开锁方式？",
    "电池可以使用多久？",
    "门锁使用什么电池供电？",
    "如何进入管理模式？",
    "录入指纹时每个手指需要按压几次？",
    "门锁最多可以保存多少个指纹？",
    "虚位密码的总长度不能超过多少位？",
    "连续输错密码几次后门锁会锁定？",
    "电量不足提示后还能开锁多少次？",
    "电池完全没电了怎么开门？",
    "门锁主体保修几年？",
    "电子部件的保修期是多久？",
]
MANUAL_ZH_UNANSWERED = [
    "门锁的最大发射功率是多少dBm？",
    "门锁支持哪些蓝牙版本？",
    "门锁的工作温度范围是多少？",
    "门锁可以连接Wi-Fi吗？",
    "门锁的重量是多少克？",
    "人脸识别最多能保存多少张人脸？",
    "谁发明了活字印刷术？",
    "北京奥运会是哪一年举办的？",
]


def cmrc_passages() -> list[dict]:
    """CMRC 2018 trial passages, each {"context", "qas": [(question, answers, answer starts)]}."""
    data = json.loads((shared_data_dir(required=True) / "cmrc2018_trial.json").read_text(encoding="utf-8"))
    passages = []
    for article in data["data"]:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            qas = [(qa["question"], [a["text"] for a in qa["answers"]], [_start(context, a) for a in qa["answers"]])
                   for qa in paragraph["qas"] if qa["question"].strip() and qa["answers"]]
            passages.append({"context": context, "qas": qas})
    return passages


def _start(context: str, answer: dict) -> int:
    # a few answer_start offsets are off by some characters; the text itself is right
    start = answer["answer_start"]
    return start if context[start:start + len(answer["text"])] == answer["text"] else context.find(answer["text"])


def cmrc_source(number: int) -> str:
    return f"cmrc{number}#"  # the "#" ends it: no source name is the start of another


def cut_answer(context: str, answers: list[str], starts: list[int]) -> str | None:
    """The passage without the sentences holding the answer; None when the answer is still in it."""
    kept = [(a, b) for a, b in split_sentences(context)
            if not any(0 <= s < b and s + len(text) > a for s, text in zip(starts, answers, strict=True))]
    remainder = "".join(context[a:b] for a, b in kept)
    return None if not remainder or contains_answer(remainder, answers) else remainder


def cut_round(passages: list[dict], number: int) -> tuple[dict, dict]:
    """({source: text} with question `number` of each passage cut out, {passage: (question, answers)})."""
    texts, asked = {}, {}
    for i, passage in enumerate(passages):
        texts[cmrc_source(i)] = passage["context"]
        if len(passage["qas"]) > number:
            question, answers, starts = passage["qas"][number]
            remainder = cut_answer(passage["context"], answers, starts)
            if remainder is not None:
                texts[cmrc_source(i)] = remainder
                asked[i] = (question, answers)
    return texts, asked


def dureader_questions() -> list[dict]:
    """DuReader questions with an answer span: {"question", "answers", "docs", "cut"}; cut: the answer
    document without its answer paragraph (None when the answer is in another paragraph too)."""
    path = shared_data_dir(required=True) / "dureader2_demo_search.train.json"
    questions = []
    for line in path.read_text(encoding="utf-8").split("\n"):  # not splitlines: texts hold U+2028
        if not line.strip():
            continue
        record = json.loads(line)
        if not record["answer_docs"] or not record["fake_answers"]:
            continue
        answers = [_head(a) for a in record["fake_answers"]]
        docs = ["\n".join(d["paragraphs"]) for d in record["documents"]]
        answer_doc = record["documents"][record["answer_docs"][0]]
        cut = "\n".join(p for j, p in enumerate(answer_doc["paragraphs"]) if j != answer_doc["most_related_para"])
        questions.append({"question": record["question"], "answers": answers, "docs": docs,
                          "cut": cut if cut and not contains_answer(cut, answers) else None})
    return questions


def _head(answer: str) -> str:
    # DuReader answers run to whole paragraphs that chunks split; their opening identifies them
    return answer[:20]


class LexicalOnly:
    """Stands in for MiniLM when indexing Chinese: its dense weight there is 0 (fusion.DENSE_WEIGHTS),
    so retrieval is lexical and the chunks' vectors are never read; embedding them would take minutes."""

    name = "all-MiniLM-L6-v2"
    dimension = 384

    def embed(self, texts: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.zeros((len(texts), self.dimension), dtype=np.float32)


def index_texts(texts: dict[str, str]) -> KnowledgeBase:
    kb = KnowledgeBase(embedder=LexicalOnly())
    for source, text in texts.items():
        kb.add_text(text, source, save=False)
    return kb


def other_hits(kb: KnowledgeBase, question: str, own: str, k: int = 4) -> list[Hit]:
    """The top-k chunks from sources other than the question's own (those whose names start with own)."""
    return [hit for hit in kb.search(question, k + 16) if not hit.source.startswith(own)][:k]


def zh_row(question: str, hits: list[Hit], answerable: bool, negative: str, group: int, data: str,
           embedder) -> dict:
    ranked = rank_sentences(question, hits, language="zh")
    return {"set": data, "group": group, "answerable": answerable, "negative": negative, "question": question,
            "no_match": not ranked or ranked[0].score <= 0.0,
            "features": support_features(question, ranked, hits, embedder, language="zh")}


def cmrc_rows(embedder, limit: int | None = None) -> list[dict]:
    passages = cmrc_passages()[:limit]
    full = index_texts({cmrc_source(i): p["context"] for i, p in enumerate(passages)})
    rows = []
    for i, passage in enumerate(passages):
        for question, answers, _ in passage["qas"]:
            rows.append(zh_row(question, full.search(question, 4), True, "", i, "cmrc", embedder))
            hits = other_hits(full, question, cmrc_source(i))
            if not any(contains_answer(hit.text, answers) for hit in hits):
                rows.append(zh_row(question, hits, False, "other", i, "cmrc", embedder))
    for number in range(CUT_ROUNDS):
        texts, asked = cut_round(passages, number)
        kb = index_texts(texts)
        for i, (question, answers) in asked.items():
            hits = kb.search(question, 4)
            if not any(contains_answer(hit.text, answers) for hit in hits):
                rows.append(zh_row(question, hits, False, "same", i, "cmrc", embedder))
    return rows


def dureader_rows(embedder) -> list[dict]:
    questions = dureader_questions()
    full = index_texts({f"dr{i}#{j}": doc for i, q in enumerate(questions) for j, doc in enumerate(q["docs"])})
    cut = index_texts({f"dr{i}#cut": q["cut"] for i, q in enumerate(questions) if q["cut"]})
    rows = []
    for i, q in enumerate(questions):
        rows.append(zh_row(q["question"], full.search(q["question"], 4), True, "", i, "dureader", embedder))
        for negative, hits in (("other", other_hits(full, q["question"], f"dr{i}#")),
                               ("same", cut.search(q["question"], 4) if q["cut"] else [])):
            if hits and not any(contains_answer(hit.text, q["answers"]) for hit in hits):
                rows.append(zh_row(q["question"], hits, False, negative, i, "dureader", embedder))
    return rows


def zh_rows(cache: Path) -> list[dict]:
    return cached_rows(cache / "cmrc_rows.json", cmrc_rows) + cached_rows(cache / "dureader_rows.json", dureader_rows)


def cached_rows(path: Path, build) -> list[dict]:
    if not path.exists():
        path.write_text(json.dumps(build(Embedder()), ensure_ascii=False))
    return json.loads(path.read_text())


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 50) -> np.ndarray:
    """Newton's method on the L2-penalised log loss (the bias unpenalised); returns [bias, weights]."""
    design = np.hstack([np.ones((len(x), 1)), x])
    w = np.zeros(design.shape[1])
    penalty = np.eye(len(w)) * l2
    penalty[0, 0] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-design @ w))
        gradient = design.T @ (p - y) + penalty @ w
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + penalty
        w -= np.linalg.solve(hessian, gradient)
    return w


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    positives = labels.sum()
    negatives = len(labels) - positives
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def extractive_figures(rows: list[dict], refused: np.ndarray) -> dict:
    """What `ragglm eval --mode extractive` reports when `refused` marks the refused questions."""
    answerable = np.array([r["answerable"] for r in rows])
    contained = np.array([r["contained"] for r in rows]) & ~refused
    cited = np.array([r["cited"] for r in rows]) & ~refused & answerable
    cited_ok = np.array([r["cited_ok"] for r in rows]) & cited
    return {"questions": len(rows), "containment": round(contained[answerable].mean(), 4),
            "citation_correctness": round(cited_ok.sum() / max(1, cited.sum()), 4),
            "refusal_rate_unanswerable": round(refused[~answerable].mean(), 4),
            "false_refusal_rate": round(refused[answerable].mean(), 4)}


def fitted_model(rows: list[dict], names: list[str], language: str, refuse: float | None = None,
                 max_false: float | None = None) -> SupportModel:
    """Fit on rows; the threshold refuses `refuse` of their unanswerables, or `max_false` of their answerables."""
    x = np.array([[r["features"][n] for n in names] for r in rows])
    y = np.array([float(r["answerable"]) for r in rows])
    w = fit_logistic(x, y)
    z = w[0] + x @ w[1:]
    cut = np.quantile(z[y == 0], refuse) if refuse is not None else np.quantile(z[y == 1], max_false)
    return SupportModel("minilm", language, {n: round(float(v), 3) for n, v in zip(names, w[1:], strict=True)},
                        round(float(w[0]), 3), round(float(1 / (1 + np.exp(-cut))), 3))


def english_report(args, cache: Path) -> dict:
    rows = squad_rows(cache)
    model = support_model_for("all-MiniLM-L6-v2", "en")
    if args.fit:
        train = [r for r in rows if r["article"] in TRAIN_ARTICLES]
        model = fitted_model(train, args.features.split(","), "en", refuse=args.refuse)
    held = np.array([r["article"] not in TRAIN_ARTICLES for r in rows])
    refused, aucs = _scored(rows, model, held)
    manuals = manual_probabilities(model, cache, MANUAL_ANSWERED + MANUAL_UNANSWERED)
    return {
        "benchmark": "answerability", "model": _constants(model), **aucs,
        "extractive_heldout": extractive_figures([r for r, h in zip(rows, held, strict=True) if h], refused[held]),
        "extractive_all": extractive_figures(rows, refused),
        **manual_figures(manuals, MANUAL_ANSWERED, MANUAL_UNANSWERED, model.threshold),
    }


def _scored(rows: list[dict], model, held: np.ndarray) -> tuple[np.ndarray, dict]:
    """Which rows are refused (below the threshold, or sharing no word), and ROC AUC on the rows the
    model was fitted on and on the held-out ones."""
    probabilities = np.array([answer_probability(r["features"], model) for r in rows])
    refused = (probabilities < model.threshold) | np.array([r["no_match"] for r in rows])
    labels = np.array([float(r["answerable"]) for r in rows])
    return refused, {"auc_fit": round(roc_auc(probabilities[~held], labels[~held]), 3),
                     "auc_heldout": round(roc_auc(probabilities[held], labels[held]), 3)}


def chinese_report(args, cache: Path) -> dict:
    rows = zh_rows(cache)
    model = support_model_for("all-MiniLM-L6-v2", "zh")
    held = np.array([r["group"] % 2 == 1 for r in rows])
    if args.fit or model is None:
        # rows without a shared word are refused before the model is asked: they do not fit it
        train = [r for r, h in zip(rows, held, strict=True) if not h and not r["no_match"]]
        model = fitted_model(train, args.zh_features.split(","), "zh", max_false=args.max_false)
    refused, aucs = _scored(rows, model, held)
    manuals = manual_probabilities(model, cache, MANUAL_ZH_ANSWERED + MANUAL_ZH_UNANSWERED)
    return {
        "benchmark": "answerability_zh", "model": _constants(model), **aucs,
        "heldout": refusal_figures([r for r, h in zip(rows, held, strict=True) if h], refused[held]),
        "fit": refusal_figures([r for r, h in zip(rows, held, strict=True) if not h], refused[~held]),
        **manual_figures(manuals, MANUAL_ZH_ANSWERED, MANUAL_ZH_UNANSWERED, model.threshold),
    }


def refusal_figures(rows: list[dict], refused: np.ndarray) -> dict:
    """Refusal rate per kind of unanswerable pair (and per set), false refusals on answerable ones."""
    out = {"answerable": sum(r["answerable"] for r in rows), "unanswerable": sum(not r["answerable"] for r in rows)}
    for name, keep in [("refusal_rate_unanswerable", lambda r: not r["answerable"]),
                       ("refusal_rate_same_passage", lambda r: r["negative"] == "same"),
                       ("refusal_rate_other_passages", lambda r: r["negative"] == "other"),
                       ("false_refusal_rate", lambda r: r["answerable"]),
                       ("cmrc_refusal_rate", lambda r: r["set"] == "cmrc" and not r["answerable"]),
                       ("cmrc_false_refusal_rate", lambda r: r["set"] == "cmrc" and r["answerable"]),
                       ("dureader_refusal_rate", lambda r: r["set"] == "dureader" and not r["answerable"]),
                       ("dureader_false_refusal_rate", lambda r: r["set"] == "dureader" and r["answerable"])]:
        picked = np.array([keep(r) for r in rows])
        out[name] = round(float(refused[picked].mean()), 4) if picked.any() else None
    return out


def manual_figures(probabilities: dict, answered: list[str], unanswered: list[str], threshold: float) -> dict:
    return {"manual_answered_min_p": min(probabilities[q] for q in answered),
            "manual_answered_refused": [q for q in answered if probabilities[q] < threshold],
            "manual_unanswered_refused": sum(probabilities[q] < threshold for q in unanswered),
            "manual_unanswered_kept": [q for q in unanswered if probabilities[q] >= threshold],
            "manual_p": probabilities}


def _constants(model: SupportModel) -> dict:
    return {"weights": model.weights, "bias": model.bias, "threshold": model.threshold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="refit on the fitting half and print the constants")
    parser.add_argument("--zh", action="store_true", help="the Chinese model, on CMRC 2018 and DuReader")
    parser.add_argument("--features", default=",".join(f for f in FEATURES if f not in ("window_cosine", "char_coverage")),
                        help="features the English refit uses")
    parser.add_argument("--zh-features", default=",".join(ZH_FEATURES), help="features the Chinese refit uses")
    parser.add_argument("--refuse", type=float, default=0.49,
                        help="the English threshold refuses this share of the fitting articles' unanswerables")
    parser.add_argument("--max-false", type=float, default=0.07,
                        help="the Chinese threshold refuses this share of the fitting half's answerable questions")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ragglm-answerability"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the CPUs are shared; MiniLM on short texts runs faster on one thread than on contended two
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAGGLM_CACHE_DIR", str(cache / "models"))
    print(json.dumps(chinese_report(args, cache) if args.zh else english_report(args, cache), ensure_ascii=False))


if __name__ == "__main__":
    main()
