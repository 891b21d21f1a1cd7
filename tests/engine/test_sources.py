"""Model names resolve to local paths, or fail with a message that says what to do."""

from __future__ import annotations

import pytest

from ragglm.engine.loading.sources import resolve_model_path
from ragglm.errors import ModelNotFoundError


def test_hub_id_offline_says_how_to_point_at_a_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelNotFoundError) as error:
        resolve_model_path("THUDM/chatglm3-6b-32k")
    message = str(error.value)
    assert "THUDM/chatglm3-6b-32k" in message and "--model /path/to/chatglm3-6b-32k" in message


def test_unknown_name_lists_what_works():
    with pytest.raises(ModelNotFoundError, match="alias"):
        resolve_model_path("no-such-model")


def test_local_folder_is_used_as_is(tmp_path):
    assert resolve_model_path(tmp_path) == tmp_path
