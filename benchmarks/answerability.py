"""The answerability check on SQuAD 2.0 and the example manuals: fit, held-out figures, one JSON line.

Every SQuAD paragraph is one document (as `ragglm eval` indexes them); each question is retrieved
top-4 and its features computed as the answering pipeline does. The logistic model is fitted on
articles 1, 3, 5, 7 and scored on 2, 4, 6, 8 and on all eight: ROC AUC, and the figures of
`ragglm eval --mode extractive` when its refusals come from the model (containment, citation
correctness, refusal on unanswerable questions, false refusals). Plain questions about the example
manuals must not be refused: their lowest probability is reported against the threshold.

    python benchmarks/answerability.py              # the packaged model: one JSON line
    python benchmarks/answerability.py --fit        # refit; prints the constants to paste
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from shared_data import shared_data_dir

from ragglm.knowledge_base import KnowledgeBase
from ragglm.pipelines.answerability import (
    FEATURES,
    answer_probability,
    support_features,
    support_model_for,
)
from ragglm.pipelines.eval import contains_answer, load_qa
from ragglm.pipelines.extract import extractive_answer, rank_sentences

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


def manual_probabilities(model, cache: Path) -> dict:
    kb = KnowledgeBase(cache / "manuals")
    kb.add(REPO / "examples" / "manuals")
    out = {}
    for question in MANUAL_ANSWERED + MANUAL_UNANSWERED:
        hits = kb.search(question, kb.settings.top_k)
        ranked = rank_sentences(question, hits, language="en")
        p = answer_probability(support_features(question, ranked, hits, kb.store.embedder), model) if ranked else 0.0
        out[question] = round(p, 3)
    return out


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", action="store_true", help="refit on articles 1, 3, 5, 7 and print the constants")
    parser.add_argument("--features", default=",".join(f for f in FEATURES if f != "window_cosine"),
                        help="features the refit uses")
    parser.add_argument("--refuse", type=float, default=0.49,
                        help="the refit's threshold refuses this share of the fitting articles' unanswerables")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "ragglm-answerability"))
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAGGLM_CACHE_DIR", str(cache / "models"))
    rows = squad_rows(cache)
    model = support_model_for("all-MiniLM-L6-v2", "en")
    if args.fit:
        names = args.features.split(",")
        train = [r for r in rows if r["article"] in TRAIN_ARTICLES]
        x = np.array([[r["features"][n] for n in names] for r in train])
        y = np.array([float(r["answerable"]) for r in train])
        w = fit_logistic(x, y)
        z = w[0] + x @ w[1:]
        threshold = float(1 / (1 + np.exp(-np.quantile(z[y == 0], args.refuse))))
        model = type(model)(model.embedder_family, model.language,
                            {n: round(float(v), 3) for n, v in zip(names, w[1:], strict=True)}, round(float(w[0]), 3),
                            round(threshold, 3))
    probabilities = np.array([answer_probability(r["features"], model) for r in rows])
    refused = (probabilities < model.threshold) | np.array([r["no_match"] for r in rows])
    labels = np.array([float(r["answerable"]) for r in rows])
    held = np.array([r["article"] not in TRAIN_ARTICLES for r in rows])
    manuals = manual_probabilities(model, cache)
    report = {
        "benchmark": "answerability", "model": {"weights": model.weights, "bias": model.bias,
                                                 "threshold": model.threshold},
        "auc_fit": round(roc_auc(probabilities[~held], labels[~held]), 3),
        "auc_heldout": round(roc_auc(probabilities[held], labels[held]), 3),
        "extractive_heldout": extractive_figures([r for r, h in zip(rows, held, strict=True) if h], refused[held]),
        "extractive_all": extractive_figures(rows, refused),
        "manual_answered_min_p": min(manuals[q] for q in MANUAL_ANSWERED),
        "manual_answered_refused": [q for q in MANUAL_ANSWERED if manuals[q] < model.threshold],
        "manual_unanswered_refused": sum(manuals[q] < model.threshold for q in MANUAL_UNANSWERED),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
