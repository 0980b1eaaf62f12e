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
