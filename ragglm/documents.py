"""Values that cross module lines: documents, chunks, search hits, citations, answers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

__all__ = ["Page", "Document", "Chunk", "Hit", "Citation", "Answer"]


@dataclass
class Page:
    number: int | None  # 1-based as printed in a viewer; None for sources without pages
    text: str


@dataclass
class Document:
    source: str  # path or URL, as the user gave it
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
class Answer:
    text: str
    citations: list[Citation]
    mode: str  # "retrieve" | "stuff" | "extractive"
    model: str
    timings: dict = field(default_factory=dict)
    sources: list[Hit] = field(default_factory=list)
    plan: dict = field(default_factory=dict)  # how the context was chosen, with its numbers

    def to_dict(self) -> dict:
        extra = {"plan": self.plan} if self.plan else {}
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
