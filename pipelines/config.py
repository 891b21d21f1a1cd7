"""AnswerConfig: what the answering pipeline may do, set once per knowledge base or per call."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["AnswerConfig"]


@dataclass
class AnswerConfig:
    max_new_tokens: int = 160
    temperature: float = 0.0
    top_k: int = 4  # chunks retrieved when the documents are not stuffed
    # Weighted share of the question's words that the best source sentence must hold; below it the
    # documents are taken not to answer, and nothing is generated. Chinese matches single characters
    # too, which lowers what a real answer scores; tuned on SQuAD 2.0 and CMRC 2018 dev questions.
    min_relevance: dict = field(default_factory=lambda: {"en": 0.3, "zh": 0.15})
    # Share of a generated answer's own words that must occur in the sources; below it the answer is
    # replaced by a cited extract rather than shown unsupported.
    min_support: float = 0.75
    # A small model given a long context guesses more: it sees at most this many sources.
    generate_sources: int = 2
    extract_sentences: int = 3
    first_line_only: bool = True  # small models ramble on after the answer
    # Decide refusals with the calibrated support model where one fits the embedder and language
    # (answerability.py: its features read sentences, not whole chunks, so manuals score like the
    # Wikipedia paragraphs it was fitted on); elsewhere min_relevance decides.
    use_support_model: bool = True
    # In auto mode a local generator under a billion parameters answers by cited extract: on SQuAD 2.0
    # SmolLM2-135M's generated answers hold the gold answer less often than the extract does.
    small_model_extracts: bool = True
