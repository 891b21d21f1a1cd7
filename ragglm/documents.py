"""Values that cross module lines: documents, chunks, search hits, citations, answers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

__all__ = ["Page", "Document", "Chunk", "Hit", "Citation", "ContextPlan", "AnswerPlan", "Answer"]


@dataclass
class Page:
    number: int | None  # 1-based as printed in a viewer; None for sources without pages
    text: str


@dataclass
class Document:
    source: str  # resolved path or normalised URL; a name given to add_text as it is
    pages: list[Page]
    title: str | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages)


@dataclass
class Chunk:
    text: str
    source: str
    page: int | None
    start: int  # character span inside the page text
    end: int
    heading: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Chunk:
        return cls(**data)


@dataclass
class Hit:
    chunk: Chunk
    score: float

    @property
    def text(self) -> str:
        return self.chunk.text

    @property
    def source(self) -> str:
        return self.chunk.source

    @property
    def page(self) -> int | None:
        return self.chunk.page


@dataclass
class Citation:
    id: int  # the [n] number the answer used
    source: str
    page: int | None
    text: str  # the supporting text from that source
    inferred: bool = False  # True when the model cited nothing and the source was matched to the answer


@dataclass
class ContextPlan:
    """Stuff the whole documents or retrieve chunks, and the numbers behind the choice."""
    mode: str  # "stuff" | "retrieve"
    reason: str
    document_tokens: int  # all documents, as the generator's tokenizer counts them
    window: int  # the generator's context length
    question_tokens: int
    answer_tokens: int
    overhead_tokens: int
    budget_tokens: int  # window - question - answer - overhead: room for sources
    prefill_tok_s: float  # measured once per generator
    estimated_prefill_s: float  # uncached document tokens / prefill rate
    cached_tokens: int  # document tokens whose KV the generator already holds
    time_budget_s: float
    prefix_cache: str | None = None  # why no document KV is ever reused, for a model whose can't be

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class AnswerPlan:
    """How an answer was reached: the route, the context plan, and the checks it passed or failed."""
    mode: str  # "stuff" | "retrieve" | "extractive"
    reason: str = ""
    language: str = ""
    context: ContextPlan | None = None  # absent for extracts
    sources_given: int | None = None
    relevance: float | None = None  # idf-weighted share of the question found in the best sentence
    answerable_p: float | None = None  # the calibrated support model's probability, where one applies
    support: float | None = None  # share of a generated answer's words found in the best sentences
    refused: str | None = None  # why the answer is the refusal phrase
    fallback: str | None = None  # why a generated answer was replaced by an extract
    standalone_question: str | None = None  # a follow-up rewritten to stand alone
    instructions: str | None = None  # what became of the caller's instructions (a system message)

    def to_dict(self) -> dict:
        """Flat, as --json prints it: the context plan's numbers beside the checks; unset fields left out."""
        data = {"mode": self.mode, "reason": self.reason}
        if self.context is not None:
            data.update({k: v for k, v in self.context.to_dict().items() if k not in data})
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("mode", "reason", "context") and value is not None and value != "":
                data[f.name] = value
        return data


@dataclass
class Answer:
    text: str
    citations: list[Citation]
    mode: str  # "retrieve" | "stuff" | "extractive"
    model: str
    timings: dict = field(default_factory=dict)
    sources: list[Hit] = field(default_factory=list)
    plan: AnswerPlan | None = None  # how the context was chosen, with its numbers

    def to_dict(self) -> dict:
        extra = {"plan": self.plan.to_dict()} if self.plan is not None else {}
        return {
            "answer": self.text,
            "citations": [
                {"id": c.id, "source": c.source, "page": c.page, "text": c.text, "inferred": c.inferred}
                for c in self.citations
            ],
            "mode": self.mode,
            "model": self.model,
            "timings": self.timings,
            **extra,
        }
