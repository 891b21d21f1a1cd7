"""Which tokens end a chat turn, for a vocabulary read from GGUF fields."""

from ragglm.engine.loading.gguf_synthetic import byte_tokenizer_fields
from ragglm.engine.tokenizers.tokenizer import bpe_from_gguf


def test_a_llama31_vocabulary_stops_at_the_end_of_a_tool_calling_turn_too():
    fields = byte_tokenizer_fields()
    fields["tokenizer.ggml.tokens"] = [*fields["tokenizer.ggml.tokens"], "<|eot_id|>", "<|eom_id|>"]
    fields["tokenizer.ggml.token_type"] = [*fields["tokenizer.ggml.token_type"], 3, 3]
    tokens = fields["tokenizer.ggml.tokens"]
    tokenizer = bpe_from_gguf(fields)
    # its own end of text, then every turn end the vocabulary holds: <|eom_id|> ends a turn that calls a tool
    assert tokenizer.eos_token_ids == [257, tokens.index("<|endoftext|>"), tokens.index("<|eot_id|>"),
                                       tokens.index("<|eom_id|>")]
