"""Language detection, sentence splitting and chunking."""

from ragglm.text.chunker import Chunker, count_tokens, word_spans
from ragglm.text.language import detect_language, is_cjk
from ragglm.text.sentences import split_sentences

__all__ = ["Chunker", "count_tokens", "word_spans", "detect_language", "is_cjk", "split_sentences"]
