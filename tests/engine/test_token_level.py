"""A model folder without tokenizer files: token ids only, and a clear error for text."""

from __future__ import annotations

import json

import pytest

from ragglm.engine.loading.families import folder_tokenizer
from ragglm.engine.tokenizers.token_level import TokenLevelTokenizer
from ragglm.errors import ModelNotFoundError


@pytest.mark.parametrize("config", [
    {"model_type": "llama", "eos_token_id": [7, 8]},
    {"model_type": "chatglm", "eos_token_id": 2},
    {"model_type": "chatglm", "position_encoding_2d": True, "eos_token_id": 5},
])
def test_folder_without_tokenizer_files_runs_on_ids(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    tokenizer, chat, _ = folder_tokenizer(tmp_path)
    assert isinstance(tokenizer, TokenLevelTokenizer)
    expected = config["eos_token_id"] if isinstance(config["eos_token_id"], list) else [config["eos_token_id"]]
    assert tokenizer.eos_token_ids == expected
    assert tokenizer.decode([1, 2, 3]) == ""
    for encode in (tokenizer.encode, tokenizer.encode_plain, lambda text: chat.ids([{"role": "user", "content": text}],
                                                                                  tokenizer)):
        with pytest.raises(ModelNotFoundError, match=f"{tmp_path} has no tokenizer .*ice_text.model"):
            encode("text")
