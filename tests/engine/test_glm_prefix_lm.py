"""ChatGLM-6B's prompt layout: which ids fix the positions, and the mask a prompt pass uses."""

from __future__ import annotations

import torch

from ragglm.engine.glm_prefix_lm import PromptLayout, positions_2d, prefix_lm_mask

SOP, GMASK, MASK = 2, 1, 0


def test_positions_stay_at_the_mask_and_blocks_count_from_sop():
    layout = PromptLayout.of([5, 6, GMASK, SOP], SOP, GMASK, MASK)
    assert layout == PromptLayout(context_length=3, mask_position=2)
    positions, blocks = positions_2d([layout], 0, 4, "cpu")
    assert positions.tolist() == [[0, 1, 2, 2]] and blocks.tolist() == [[0, 0, 0, 1]]
    positions, blocks = positions_2d([layout], 4, 2, "cpu")  # two generated tokens
    assert positions.tolist() == [[2, 2]] and blocks.tolist() == [[2, 3]]


def test_gmask_wins_over_mask_and_missing_markers_fall_back():
    assert PromptLayout.of([5, MASK, 6, GMASK, SOP], SOP, GMASK, MASK).mask_position == 3
    assert PromptLayout.of([5, MASK, 6, SOP], SOP, GMASK, MASK).mask_position == 1
    no_mask = PromptLayout.of([5, 6, SOP], SOP, GMASK, MASK)
    assert no_mask == PromptLayout(2, None)
    assert positions_2d([no_mask], 3, 1, "cpu")[0].tolist() == [[3]]  # positions keep counting
    assert PromptLayout.of([5, 6, GMASK], SOP, GMASK, MASK).context_length == 3  # no <sop>: all context


def test_context_attends_both_ways_and_a_prefix_is_seen_by_all():
    layout = PromptLayout.of([5, 6, GMASK, SOP], SOP, GMASK, MASK)
    mask = prefix_lm_mask([layout], 0, 4, 2, "cpu")[0, 0]
    expected = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    assert torch.equal(mask.int(), expected)
