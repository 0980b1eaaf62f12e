"""Tiny configs for every causal-LM type transformers knows, built from each config class's defaults.

Used by ``bench/family_sweep.py`` (the full sweep) and by ``tests/growth/test_family_sweep.py`` (a
representative subset). Sizes are shrunk by name (hidden 64, FFN 64, 4 heads of 16, vocab 256, 4
experts, ...), every layer count is set to the number asked for, and per-layer lists are cut to that
many entries while keeping every kind of layer they name.

Example:
    >>> cfg = tiny_config("llama", layers=2)
    >>> cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size
    (64, 2, 256)
"""

from __future__ import annotations

from typing import Any

HIDDEN = 64
HEADS = 4
HEAD_DIM = HIDDEN // HEADS
VOCAB = 256

_HIDDEN_KEYS = {"hidden_size", "d_model", "n_embd", "dim", "embed_dim", "word_embed_proj_dim", "hidden_dim",
                "embedding_size", "d_embed", "n_embed", "emb_dim", "input_size"}
_FFN_KEYS = {"intermediate_size", "ffn_dim", "n_inner", "d_ff", "ffn_hidden_size", "decoder_ffn_dim",
             "encoder_ffn_dim", "intermediate_dim", "dim_ff", "mlp_dim", "ff_dim", "moe_intermediate_size",
             "shared_expert_intermediate_size", "expert_intermediate_size", "moe_ffn_hidden_size",
             "shared_intermediate_size", "moe_shared_expert_intermediate_size", "dense_intermediate_size",
             "ffn_hidden_size_dense", "expert_ffn_hidden_size", "intermediate_size_mlp", "mlp_hidden_size",
             "intermediate_size_moe", "moe_intermediate_dim"}
_HEAD_KEYS = {"num_attention_heads", "n_head", "n_heads", "num_heads", "decoder_attention_heads",
              "encoder_attention_heads", "attention_heads", "num_query_heads"}
_KV_KEYS = {"num_key_value_heads", "num_kv_heads", "multi_query_group_num", "n_kv_heads", "num_key_value_groups",
            "n_head_kv", "kv_heads"}
_HEAD_DIM_KEYS = {"head_dim", "attention_head_size", "d_head", "kv_channels", "attention_head_dim", "head_size",
                  "d_kv", "global_head_dim", "swa_head_dim"}
_LAYER_KEYS = {"num_hidden_layers", "n_layer", "num_layers", "n_layers", "decoder_layers", "encoder_layers",
               "num_decoder_layers", "n_layers_decoder", "num_blocks"}
_EXPERT_KEYS = {"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "num_routed_experts",
                "n_experts", "moe_num_routed_experts", "num_moe_experts"}
_TOPK_KEYS = {"num_experts_per_tok", "moe_topk", "top_k", "n_activated_experts", "moe_k", "num_selected_experts",
              "num_experts_per_token", "moe_top_k", "router_topk"}
_TOKEN_KEYS = {"pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id",
               "cls_token_id", "mask_token_id", "unk_token_id", "eoi_token_id", "boi_token_id", "image_token_id",
               "forced_eos_token_id", "forced_bos_token_id"}
_SMALL = {"kv_lora_rank": 16, "q_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 8,
          "n_group": 1, "topk_group": 1, "num_groups": 1, "state_size": 8, "ssm_state_size": 8, "mamba_d_state": 8,
          "d_state": 8, "linear_key_head_dim": 8, "linear_value_head_dim": 8, "linear_num_key_heads": 2,
          "linear_num_value_heads": 4, "time_step_rank": 8, "mamba_dt_rank": 8, "n_shared_experts": 1,
          "num_shared_experts": 1, "moe_num_shared_experts": 1, "index_head_dim": 16, "index_n_heads": 2,
          "index_topk": 8, "rope_dim": 8, "partial_rotary_dim": 8, "rotary_dim": 8, "rotary_emb_base": 10000,
          "sliding_window": 32, "attention_window": 32, "local_window_size": 32, "window_size": 32,
          "conv_L_cache": 3, "num_nextn_predict_layers": 0, "max_window_layers": 2, "block_size": 32,
          "attention_chunk_size": 32, "chunk_size": 32, "hidden_size_per_layer_input": 8, "vocab_size_per_layer_input": 256,
          "laurel_rank": 8, "altup_num_inputs": 2, "num_kv_shared_layers": 0, "lru_width": HIDDEN,
          "mamba_n_heads": 8, "mamba_d_head": 16, "mamba_headdim": 16, "mamba_head_dim": 16, "ssm_num_heads": 8,
          "ssm_head_dim": 16, "mamba_n_groups": 1, "n_groups": 1, "mamba_expand": 2, "expand": 2,
          "moe_latent_size": None, "n_positions": 256, "max_position_embeddings": 256, "n_ctx": 256,
          "max_seq_len": 256, "seq_length": 256, "max_sequence_length": 256, "pad_vocab_size_multiple": 1,
          "num_codebooks": 2}


_TOKEN_IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 1}


def _shrink_value(key: str, value: Any) -> Any:
    if key in _TOKEN_KEYS and isinstance(value, list):
        return [_shrink_value(key, v) for v in value[:1]]
    if value is None and key in _HEAD_DIM_KEYS:
        return HEAD_DIM
    if value is None and key in _KV_KEYS:
        return 2
    if isinstance(value, bool) or not isinstance(value, int):
        return value
    if key in _HIDDEN_KEYS:
        return HIDDEN
    if key in _FFN_KEYS:
        return HIDDEN
    if key in _HEAD_KEYS:
        return HEADS
    if key in _KV_KEYS:
        return min(value, 2) if value > 0 else value
    if key in _HEAD_DIM_KEYS:
        return HEAD_DIM
    if key in _EXPERT_KEYS:
        return min(value, 4)
    if key in _TOPK_KEYS:
        return min(value, 2)
    if key == "vocab_size":
        return VOCAB
    if key in _TOKEN_KEYS:
        return value if 0 <= value < 8 else _TOKEN_IDS.get(key, 3)
    if key in _SMALL:
        return _SMALL[key] if _SMALL[key] is None or value > _SMALL[key] else value
    return value


def _cut_list(values: list, old_layers: int, layers: int) -> list:
    """A per-layer list cut to ``layers`` entries that keeps every distinct kind (first occurrences first)."""
    kinds: dict[Any, int] = {}
    for i, v in enumerate(values):
        key = repr(v)
        kinds.setdefault(key, i)
    chosen = sorted(kinds.values())[:layers]
    rest = [i for i in range(len(values)) if i not in chosen]
    picked = sorted(chosen + rest[: layers - len(chosen)])
    return [values[i] for i in picked]


def shrink(d: dict[str, Any], layers: int) -> dict[str, Any]:
    """Shrink a config dict (and its sub-config dicts) in place of copies; layer lists cut to ``layers``."""
    old_layers = next((d[k] for k in _LAYER_KEYS if isinstance(d.get(k), int) and d[k] > 0), None)
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict) and value and all(str(k).isdigit() for k in value):
            out[key] = {k: v for k, v in value.items() if int(k) < layers}  # per-layer overrides by index
        elif isinstance(value, dict) and ("model_type" in value or key.endswith("_config")):
            out[key] = shrink(value, layers)
        elif key in _LAYER_KEYS and isinstance(value, int) and not isinstance(value, bool):
            out[key] = layers if value > 0 else value
        elif isinstance(value, list) and old_layers and len(value) == old_layers and old_layers > layers:
            out[key] = _cut_list(value, old_layers, layers)
        elif isinstance(value, list) and old_layers and value and all(isinstance(v, int) for v in value) \
                and all(0 <= v < old_layers for v in value) and ("layer" in key or key.endswith("_idx")):
            out[key] = [v for v in value if v < layers]
        else:
            out[key] = _shrink_value(key, value)
    if isinstance(out.get("qk_rope_head_dim"), int) and "kv_lora_rank" in out:
        # multi-head latent attention: every head has its own latent keys and values; the rotary part of a head is
        # qk_rope_head_dim and a query/key head is the rotary part plus the rest
        out["head_dim"] = out["qk_rope_head_dim"]
        for key in ("num_key_value_heads", "num_kv_heads"):
            if key in out and isinstance(out.get("num_attention_heads"), int):
                out[key] = out["num_attention_heads"]
        if "qk_head_dim" in out:
            out["qk_head_dim"] = out["qk_rope_head_dim"] + out.get("qk_nope_head_dim", 0)
    return out


#: hand-chosen sizes for the types the generic rules get wrong (a default the class itself rejects, layer kinds
#: that need more than the first two layers, sizes tied together by a rule); applied last
OVERRIDES: dict[str, dict[str, Any]] = {
    "mamba2": {"num_heads": 8},
    "reformer": {"is_decoder": True, "axial_pos_shape": [16, 16], "axial_pos_embds_dim": [32, 32],
                 "attn_layers": ["local", "lsh"], "max_position_embeddings": 256, "num_buckets": 8,
                 "lsh_attn_chunk_length": 16, "local_attn_chunk_length": 16},
    "bamba": {"attn_layer_indices": [1]},
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2, "expert_layer_offset": 1},
    "granitemoehybrid": {"layer_types": ["linear_attention", "attention"]},
    "recurrent_gemma": {"block_types": ["recurrent", "attention"]},
    "rwkv": {"attention_hidden_size": HIDDEN, "intermediate_size": 4 * HIDDEN},
    "xlstm": {"embedding_dim": HIDDEN, "num_heads": 4, "qk_dim_factor": 1.0},
    "bailing_hybrid": {"num_expert_group": 1, "topk_group": 1, "num_experts_per_token": 2},
    "deepseek_v2": {"num_experts_per_tok": 2, "n_group": 1, "topk_group": 1},
    "dots1": {"n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2},
    "lfm2_moe": {"layer_types": ["conv", "full_attention"], "num_dense_layers": 1},
    "falcon_h1": {"mamba_d_ssm": 2 * HIDDEN, "mamba_n_heads": 8, "mamba_d_head": 16},
    "dory": {"num_hidden_layers": 3, "n_input_layers": 1, "n_recurrent_layers": 1, "n_output_layers": 1,
             "layer_types": ["full_attention", "sliding_attention", "full_attention"]},
    "hrm_text": {"num_layers_per_stack": 1, "H_cycles": 1, "L_cycles": 1, "L_bp_cycles": [1]},
    "inkling2_text": {"unpadded_vocab_size": VOCAB, "n_layers_per_attn_res_block": 1},
    "inkling2_loop_text": {"unpadded_vocab_size": VOCAB, "n_layers_per_attn_res_block": 1},
    "zamba2": {"attention_hidden_size": 2 * HIDDEN, "attention_head_dim": 2 * HIDDEN // HEADS, "mamba_headdim": 16,
               "hybrid_layer_ids": [1], "layers_block_type": ["linear_attention", "hybrid"]},
    "kolibri1_1": {"layer_types": ["indexed_attention", "sliding_attention"], "index_layers": [0],
                   "kv_source_layers": [0, 1], "index_num_heads": 2},
    "dots3_note_text": {"head_dim": 16},
    "xmod": {"is_decoder": True, "default_language": "en_XX"},
    "dbrx": {"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    "zamba": {"layers_block_type": ["hybrid", "hybrid"], "attention_hidden_size": 2 * HIDDEN,
              "attention_head_dim": 2 * HIDDEN // HEADS, "mamba_dt_rank": 8},
    "blt": {"encoder_hash_byte_group_size": [3], "encoder_hash_byte_group_vocab": 256},
    "qwen4_exp_text": {"indexer_n_heads": 2, "indexer_kv_heads": 1, "indexer_head_dim": 16, "indexer_budget": 32,
                       "indexer_compress_ratio": 4},
    "cohere_compass_text": {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
}


OVERRIDES |= {"dots3_note": {"text_config": OVERRIDES["dots3_note_text"], "vision_config": {"adapter_in_dim": HIDDEN, "adapter_out_dim": HIDDEN},
                             "audio_config": {"adapter_input_size": HIDDEN, "adapter_out_dim": HIDDEN}},
              "qwen4_exp": {"text_config": OVERRIDES["qwen4_exp_text"]}}


def _merge(into: dict[str, Any], changes: dict[str, Any]) -> None:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict) and key.endswith("_config"):
            _merge(into[key], value)
        else:
            into[key] = value


def tiny_config(model_type: str, layers: int = 2):
    """A transformers config of ``model_type`` with tiny sizes and ``layers`` decoder layers."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    default = cls().to_dict()
    small = shrink(default, layers)
    for key in ("transformers_version", "model_type", "architectures", "_name_or_path", "dtype", "torch_dtype"):
        small.pop(key, None)
    _merge(small, OVERRIDES.get(model_type, {}))
    small["tie_word_embeddings"] = default.get("tie_word_embeddings", False)
    return cls(**small)
