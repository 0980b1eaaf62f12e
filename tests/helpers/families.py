"""Tiny configs of many causal-LM families (random weights are made from these at test time)."""

from __future__ import annotations

import transformers as tf

H, I, V = 32, 64, 128  # hidden, FFN, vocab: tiny but with real GQA/MoE structure


def _attn(kv_heads=2, **extra):
    return dict(hidden_size=H, intermediate_size=I, num_attention_heads=4, num_key_value_heads=kv_heads, vocab_size=V,
                max_position_embeddings=128, **extra)


FAMILIES = {
    "llama": lambda n: tf.LlamaConfig(num_hidden_layers=n, **_attn()),
    "mistral": lambda n: tf.MistralConfig(num_hidden_layers=n, sliding_window=64, **_attn()),
    "qwen2": lambda n: tf.Qwen2Config(num_hidden_layers=n, **_attn()),
    "qwen3": lambda n: tf.Qwen3Config(num_hidden_layers=n, head_dim=8, **_attn()),
    "gemma": lambda n: tf.GemmaConfig(num_hidden_layers=n, head_dim=8, **_attn()),
    "gemma2": lambda n: tf.Gemma2Config(num_hidden_layers=n, head_dim=8, sliding_window=16, **_attn()),
    # 3 layers with sliding_window_pattern 2: layer kinds S,F,S; Gstack must follow the map, not the rule
    "gemma3_text": lambda n: tf.Gemma3TextConfig(num_hidden_layers=n, head_dim=8, sliding_window=16,
                                                 layer_types=["sliding_attention", "full_attention"] * (n // 2)
                                                 + ["sliding_attention"] * (n % 2), **_attn()),
    "phi3": lambda n: tf.Phi3Config(num_hidden_layers=n, pad_token_id=0, **_attn()),
    "gpt2": lambda n: tf.GPT2Config(n_layer=n, n_embd=H, n_head=4, vocab_size=V, n_positions=128),
    "gpt_neox": lambda n: tf.GPTNeoXConfig(num_hidden_layers=n, hidden_size=H, intermediate_size=I,
                                           num_attention_heads=4, vocab_size=V, max_position_embeddings=128,
                                           rotary_pct=0.5),
    "gptj": lambda n: tf.GPTJConfig(n_layer=n, n_embd=H, n_head=4, vocab_size=V, n_positions=128, rotary_dim=4),
    "opt": lambda n: tf.OPTConfig(num_hidden_layers=n, hidden_size=H, ffn_dim=I, num_attention_heads=4,
                                  vocab_size=V, max_position_embeddings=128, word_embed_proj_dim=H),
    "falcon": lambda n: tf.FalconConfig(num_hidden_layers=n, hidden_size=H, num_attention_heads=4, vocab_size=V,
                                        new_decoder_architecture=True, num_kv_heads=2),
    "bloom": lambda n: tf.BloomConfig(n_layer=n, hidden_size=H, n_head=4, vocab_size=V),
    "mpt": lambda n: tf.MptConfig(n_layers=n, d_model=H, n_heads=4, vocab_size=V, max_seq_len=128),
    "starcoder2": lambda n: tf.Starcoder2Config(num_hidden_layers=n, **_attn()),
    "olmo": lambda n: tf.OlmoConfig(num_hidden_layers=n, **_attn()),  # LayerNorm without weights
    "olmo2": lambda n: tf.Olmo2Config(num_hidden_layers=n, **_attn()),
    "mixtral": lambda n: tf.MixtralConfig(num_hidden_layers=n, num_local_experts=4, num_experts_per_tok=2, **_attn()),
    "qwen2_moe": lambda n: tf.Qwen2MoeConfig(num_hidden_layers=n, num_experts=4, num_experts_per_tok=2,
                                             moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                             mlp_only_layers=[0], **_attn()),
    # hybrid attention described by layer_types (linear attention + full attention)
    "qwen3_next": lambda n: tf.Qwen3NextConfig(num_hidden_layers=n, head_dim=8, num_experts=4, num_experts_per_tok=2,
                                               moe_intermediate_size=32, shared_expert_intermediate_size=32,
                                               linear_num_value_heads=4, linear_num_key_heads=2,
                                               linear_key_head_dim=8, linear_value_head_dim=8,
                                               layer_types=(["linear_attention", "full_attention"] * n)[:n], **_attn()),
    # dense-then-MoE, described by a list (mlp_layer_types)
    "glm4_moe_lite": lambda n: tf.Glm4MoeLiteConfig(num_hidden_layers=n, n_routed_experts=4, num_experts_per_tok=2,
                                                    moe_intermediate_size=32, n_group=1, topk_group=1,
                                                    kv_lora_rank=16, q_lora_rank=16, qk_rope_head_dim=8,
                                                    qk_nope_head_dim=8, v_head_dim=8, **_attn(kv_heads=4)),
    # dense-then-MoE, described by a rule (first_k_dense_replace): only some layer orders are expressible
    "deepseek_v3": lambda n: tf.DeepseekV3Config(num_hidden_layers=n, n_routed_experts=4, num_experts_per_tok=2,
                                                 moe_intermediate_size=32, first_k_dense_replace=1, n_group=1,
                                                 topk_group=1, kv_lora_rank=16, q_lora_rank=16,
                                                 qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, **_attn(kv_heads=4)),
}


# ------------------------------------------------------------------ operator tests (issue 3)

INIT = 0.1  # larger than the usual 0.02 so logits are far from uniform and differences show
COMMON = dict(vocab_size=128, bos_token_id=1, eos_token_id=2, initializer_range=INIT)


def _configs() -> dict:
    """2-layer models of the families every operator is tested on (width-capable, random init of std INIT)."""
    llama_like = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128, **COMMON)
    return {
        "llama": lambda: tf.LlamaConfig(**llama_like, tie_word_embeddings=False),  # GQA
        "qwen2": lambda: tf.Qwen2Config(**llama_like),  # q/k/v biases
        "gemma": lambda: tf.GemmaConfig(**dict(llama_like, num_key_value_heads=1), head_dim=8,
                                       pad_token_id=0),  # MQA, (1 + w) norms, sqrt(H) embedding scale, tied
        "phi3": lambda: tf.Phi3Config(**llama_like, pad_token_id=0),  # fused qkv and gate_up
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128, vocab_size=128,
                                     bos_token_id=1, eos_token_id=2, initializer_range=INIT),  # Conv1D, LN, tied
        "neox": lambda: tf.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=128,
                                        **COMMON),  # per-head fused qkv, partial rotary, parallel residual
        "opt": lambda: tf.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                                   word_embed_proj_dim=32, max_position_embeddings=128, vocab_size=128,
                                   bos_token_id=1, eos_token_id=2, pad_token_id=0, init_std=INIT),  # LN + biases
        "falcon": lambda: tf.FalconConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
                                         new_decoder_architecture=True, **COMMON),  # per-group fused qkv
        "mixtral": lambda: tf.MixtralConfig(**llama_like, num_local_experts=3, num_experts_per_tok=2),
        "qwen2_moe": lambda: tf.Qwen2MoeConfig(**dict(llama_like, intermediate_size=64), moe_intermediate_size=16,
                                              shared_expert_intermediate_size=48, num_experts=4,
                                              num_experts_per_tok=2),
    }


OPERATOR_CONFIGS = _configs()
