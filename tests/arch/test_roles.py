"""arch.roles: what the name rules and the config say about tensors, heads and fused layouts."""

from __future__ import annotations

import torch
from transformers import LlamaConfig

from hfgrow.arch.roles import head_geometry, qkv_row_order


def test_qkv_row_order_layouts():
    assert qkv_row_order("concat", 2, 1, 1).tolist() == [0, 1, 2, 3]
    assert qkv_row_order("per_head", 2, 2, 1).tolist() == [0, 2, 4, 1, 3, 5]
    # per group: q heads of the group, then its k, then its v (2 groups of 2 query heads)
    assert qkv_row_order("per_group", 4, 2, 1).tolist() == [0, 1, 4, 6, 2, 3, 5, 7]
    # head_dim > 1 keeps each head's rows together
    assert qkv_row_order("per_head", 1, 1, 2).tolist() == [0, 1, 2, 3, 4, 5]
    assert torch.equal(torch.sort(qkv_row_order("per_group", 8, 2, 4)).values, torch.arange(48))


def test_head_geometry_from_config():
    assert head_geometry(LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2)) == (4, 2, 16)
    assert head_geometry(LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                                     head_dim=32)) == (4, 4, 32)
