"""Score the answering pipeline on a QA file: containment, citation correctness, refusals, time."""

from __future__ import annotations

import json
import re
import string
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ragglm.errors import SourceError
from ragglm.pipelines.checks import is_refusal
from ragglm.pipelines.citations import CITATION_MARK

__all__ = ["QAItem", "QASet", "load_qa", "normalize_answer", "contains_answer",
           "EvalReport", "evaluate"]


@dataclass
class QAItem:
    question: str
    answers: list[str]  # empty for a question the documents cannot answer
    context_id: str | None = None
    id: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


@dataclass
class QASet:
    items: list[QAItem]
    contexts: dict[str, str] = field(default_factory=dict)  # context id -> passage text


def load_qa(path: str | Path) -> QASet:
    """SQuAD-format JSON (v1 or v2) or JSONL with question/answers(/context) per line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(str(path), f"cannot read the QA file ({exc.strerror})", "check the path") from exc
    stripped = raw.lstrip()
    if stripped.startswith("{") and '"data"' in stripped[:2000]:
        try:
            return _squad(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(str(path), f"not a SQuAD-format file ({exc})", "expected data/paragraphs/qas") from exc
    return _jsonl(path, raw)


def _squad(data: dict) -> QASet:
    qa_set = QASet([])
    for a, article in enumerate(data["data"]):
        title = article.get("title") or f"article{a}"
        for p, paragraph in enumerate(article["paragraphs"]):
            context_id = f"{title}#{p}"
            qa_set.contexts[context_id] = paragraph["context"]
            for qa in paragraph["qas"]:
                if not str(qa.get("question", "")).strip():
                    continue  # a few published sets hold blank questions
                answers = [] if qa.get("is_impossible") else _unique(x["text"] for x in qa.get("answers", []))
                qa_set.items.append(QAItem(qa["question"], answers, context_id, str(qa.get("id", ""))))
    return qa_set


def _jsonl(path: Path, raw: str) -> QASet:
    qa_set = QASet([])
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            question = record["question"]
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceError(f"{path}:{number}", f"expected a JSON object with a \"question\" ({exc})") from exc
        if not str(question).strip():
            continue
        answers = record.get("answers", record.get("answer", []))
        answers = [answers] if isinstance(answers, str) else [a["text"] if isinstance(a, dict) else a for a in answers]
        context_id = None
        if record.get("context"):
            context_id = str(record.get("context_id") or f"line{number}")
            qa_set.contexts.setdefault(context_id, record["context"])
        qa_set.items.append(QAItem(question, _unique(answers), context_id, str(record.get("id", number))))
    return qa_set


def _unique(texts) -> list[str]:
    seen: list[str] = []
    for text in texts:
        if text and text.strip() and text not in seen:
            seen.append(text)
    return seen


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower case; no punctuation, articles, citation marks or spaces between CJK characters."""
    text = CITATION_MARK.sub(" ", unicodedata.normalize("NFKC", text).lower())
    text = "".join(" " if unicodedata.category(c).startswith("P") or c in string.punctuation else c for c in text)
    text = _ARTICLES.sub(" ", text)
    text = re.sub(r"(?<=[^\x00-\x7f])\s+|\s+(?=[^\x00-\x7f])", "", text)
    return " ".join(text.split())


def contains_answer(text: str, answers: list[str]) -> bool:
    haystack = f" {normalize_answer(text)} "
    for answer in answers:
        needle = normalize_answer(answer)
        if needle and (f" {needle} " in haystack if needle.isascii() else needle in haystack):
            return True
    return False


@dataclass
class EvalReport:
    qa_file: str
    questions: int = 0
    answerable: int = 0
    unanswerable: int = 0
    containment: float = 0.0  # answerable questions whose answer contains a gold answer
    cited_answers: int = 0  # answerable, not refused, with at least one citation
    citation_correctness: float = 0.0  # of those, a cited chunk contains a gold answer
    refusal_rate_unanswerable: float = 0.0
    false_refusal_rate: float = 0.0  # answerable questions refused
    retrieval_hit_rate: float = 0.0  # answerable: some given source contains a gold answer
    mean_seconds_per_question: float = 0.0
    modes: dict = field(default_factory=dict)
    model: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def evaluate(ask: Callable, items: list[QAItem], qa_file: str = "",
             progress: Callable[[int, int], None] | None = None) -> EvalReport:
    """Ask every question through ask(question) -> Answer and score the answers."""
    report = EvalReport(qa_file)
    contained = cited = cited_ok = refused_unanswerable = refused_answerable = retrieved = 0
    elapsed = 0.0
    for number, item in enumerate(items, 1):
        started = time.perf_counter()
        answer = ask(item.question)
        elapsed += time.perf_counter() - started
        report.modes[answer.mode] = report.modes.get(answer.mode, 0) + 1
        report.model = report.model or answer.model
        refused = is_refusal(answer.text)
        if not item.answerable:
            report.unanswerable += 1
            refused_unanswerable += refused
        else:
            report.answerable += 1
            refused_answerable += refused
            contained += contains_answer(answer.text, item.answers)
            retrieved += any(contains_answer(hit.text, item.answers) for hit in answer.sources)
            if answer.citations and not refused:
                cited += 1
                cited_ok += any(
                    1 <= c.id <= len(answer.sources) and contains_answer(answer.sources[c.id - 1].text, item.answers)
                    for c in answer.citations
                )
        if progress:
            progress(number, len(items))
    report.questions = len(items)
    report.containment = _share(contained, report.answerable)
    report.cited_answers = cited
    report.citation_correctness = _share(cited_ok, cited)
    report.refusal_rate_unanswerable = _share(refused_unanswerable, report.unanswerable)
    report.false_refusal_rate = _share(refused_answerable, report.answerable)
    report.retrieval_hit_rate = _share(retrieved, report.answerable)
    report.mean_seconds_per_question = round(elapsed / max(1, len(items)), 3)
    return report


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0
