"""Tiny models built offline (random weights, a small trained tokenizer) for the demo, tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEMO_TEXT = """\
Growing a language model means building a larger model from a smaller trained one.
Stacking repeats the layers of the small model, so the large model starts from what the small one learned.
The grown model is then trained further on the same kind of text, and it reaches a given loss
with less compute than a model of the same size trained from scratch.
"""


#: The smallest vocabulary a byte-level tokenizer fits in: 256 byte symbols and the end-of-text token.
BYTE_LEVEL_VOCAB = 257


def make_tokenizer(folder: Path | None = None, text: str = DEMO_TEXT, vocab_size: int = 256, *, bos: bool = False):
    """A BPE tokenizer trained on ``text`` in memory (no download), saved to ``folder``; it never gives an id
    of ``vocab_size`` or more, so it fits a model with ``vocab_size`` embeddings.

    From :data:`BYTE_LEVEL_VOCAB` (257) ids up it is byte-level (every text encodes, nothing is unknown);
    below that it keeps the most frequent characters of ``text`` and maps the rest to ``<unk>``. With
    ``bos`` it has a ``<bos>`` token that its post-processor puts before every text, as Gemma's and
    Llama's tokenizers do (``tokenizer(text)`` starts with it; ``add_special_tokens=False`` leaves it out).

    Example:
        >>> from hfgrow.data.tokenization import tokenizer_vocab_size
        >>> tokenizer_vocab_size(make_tokenizer(vocab_size=256)) <= 256
        True
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from hfgrow.data.tokenization import tokenizer_vocab_size

    from tokenizers import processors

    byte_level = vocab_size >= BYTE_LEVEL_VOCAB + bos
    specials = (["<|endoftext|>"] if byte_level else ["<|endoftext|>", "<unk>"]) + (["<bos>"] if bos else [])
    tok = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    if byte_level:
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:  # the alphabet alone would overflow: keep its most frequent symbols, leave a quarter for merges
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                      limit_alphabet=max(1, (vocab_size - len(specials)) * 3 // 4))
    tok.train_from_iterator([text] * 4, trainer)
    if bos:
        bos_id = tok.token_to_id("<bos>")
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B",
                                                           special_tokens=[("<bos>", bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   bos_token="<bos>" if bos else "<|endoftext|>",
                                   **({} if byte_level else {"unk_token": "<unk>"}))
    if tokenizer_vocab_size(fast) > vocab_size:  # the trainer's promise, checked: models built here rely on it
        raise ValueError(f"the tokenizer has {tokenizer_vocab_size(fast)} ids, more than the {vocab_size} asked for")
    if folder is not None:
        fast.save_pretrained(folder)
    return fast


def make_model(folder: Path, config: Any, seed: int = 0, dtype=None, tokenizer: bool = True,
               safe_serialization: bool = True, max_shard_size: str = "5GB"):
    """Save a randomly initialised causal LM for ``config`` (a transformers config) to ``folder``, with a tokenizer
    (``tokenizer=True``) whose ids all have an embedding row.

    Example:
        >>> model = make_model(Path("small"), tiny_llama_config(layers=4))
        >>> model.config.num_hidden_layers
        4
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    model.eval()
    model.save_pretrained(folder, max_shard_size=max_shard_size)
    if not safe_serialization:  # transformers 5 only writes safetensors; make the legacy format by hand
        import torch as _torch

        from hfgrow.io.checkpoint import Checkpoint

        ckpt = Checkpoint.open(Path(folder))
        state = {name: ckpt.load(name).clone() for name in ckpt.tensors}
        ckpt.close()
        for path in list(Path(folder).glob("model*.safetensors*")):
            path.unlink()
        _torch.save(state, Path(folder) / "pytorch_model.bin")
    if tokenizer:  # every id it gives has an embedding row
        from hfgrow.arch.layout import text_config

        make_tokenizer(folder, vocab_size=min(512, text_config(config).vocab_size))
    return model


def tiny_llama_config(layers: int = 4, **overrides):
    from transformers import LlamaConfig

    kwargs = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256, max_position_embeddings=256, tie_word_embeddings=False)
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def tiny_gemma3_config(layers: int = 4, vocab_size: int = 256, **overrides):
    """A Gemma-3-shaped text model: sliding and full attention layers (``layer_types``), GQA 4:1, the post-norms
    of every sublayer, ``(1 + w)`` norms, tied embeddings, the BOS/EOS ids of :func:`make_tokenizer` (``bos=True``).

    Example:
        >>> cfg = tiny_gemma3_config(layers=4)
        >>> cfg.layer_types, cfg.tie_word_embeddings, cfg.num_attention_heads // cfg.num_key_value_heads
        (['sliding_attention', 'sliding_attention', 'sliding_attention', 'full_attention'], True, 4)
    """
    from transformers import Gemma3TextConfig

    kwargs = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                  num_key_value_heads=1, head_dim=16, vocab_size=vocab_size, max_position_embeddings=256,
                  sliding_window=16, layer_types=[("full_attention" if (i + 1) % 4 == 0 else "sliding_attention")
                                                  for i in range(layers)],
                  tie_word_embeddings=True, bos_token_id=vocab_size - 1, eos_token_id=0, pad_token_id=None)
    kwargs.update(overrides)
    return Gemma3TextConfig(**kwargs)


def python_docs_corpus(max_chars: int | None = None) -> list[str]:
    """Real English text that ships with every CPython: the pydoc help topics (~0.7 MB)."""
    from pydoc_data.topics import topics

    documents = [topics[key] for key in sorted(topics)]
    if max_chars is not None:
        kept, total = [], 0
        for doc in documents:
            if total >= max_chars:
                break
            kept.append(doc)
            total += len(doc)
        documents = kept
    return documents


def pretrain_tiny(folder: Path, documents: list[str], steps: int = 100, seq_len: int = 64, batch_size: int = 8,
                  lr: float = 3e-3, seed: int = 0) -> float:
    """Train the model in ``folder`` briefly with a plain loop (for tests and demos); returns the last loss."""
    import torch
    from transformers import AutoModelForCausalLM

    from hfgrow.data.tokenization import token_stream
    from hfgrow.io.tokenizer import load_tokenizer

    torch.manual_seed(seed)
    tokenizer = load_tokenizer(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = token_stream(tokenizer, documents)  # the stream training reads
    count = len(ids) // seq_len
    data = torch.tensor(ids[: count * seq_len]).view(count, seq_len)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        batch = data[torch.randint(0, count, (batch_size,), generator=generator)]
        loss = model(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    return loss.item()


@dataclass
class DemoCheck:
    """What ``hfgrow demo`` measured on the grown model: each value its line states."""

    layers: int  # num_hidden_layers of the grown model as transformers loads it
    expected_layers: int  # the source's layers times the factor
    load_issues: dict[str, list] = field(default_factory=dict)  # transformers' loading report, non-empty entries
    layer_map: list[int] = field(default_factory=list)
    differing_layers: list[int] = field(default_factory=list)  # grown layers not bit for bit their source layer
    differing_globals: list[str] = field(default_factory=list)  # embeddings, final norm, head not equal
    loss: float = float("nan")

    @property
    def ok(self) -> bool:
        import math

        return (self.layers == self.expected_layers and not self.load_issues and not self.differing_layers
                and not self.differing_globals and math.isfinite(self.loss))


def check_stacked(small: Path, grown: Path, layer_map: list[int], text: str = DEMO_TEXT) -> DemoCheck:
    """Load ``grown`` with transformers and check it against ``small``, which it was Gstacked from: its layer count,
    the loading report (no missing, unexpected or mismatched weights), every grown layer bit for bit the source
    layer ``layer_map`` names, the other weights bit for bit, and a finite loss on ``text``.

    Example:
        >>> check = check_stacked(Path("small"), Path("grown"), [0, 1, 2, 3] * 4)    # doctest: +SKIP
        >>> check.ok, check.layers
        (True, 16)
    """
    import math

    import torch
    from transformers import AutoModelForCausalLM

    from hfgrow.data.tokenization import token_stream
    from hfgrow.errors import HfgrowError
    from hfgrow.io.tokenizer import load_tokenizer

    try:
        source = AutoModelForCausalLM.from_pretrained(small, dtype=torch.float32)
        model, info = AutoModelForCausalLM.from_pretrained(grown, dtype=torch.float32, output_loading_info=True)
    except Exception as exc:  # noqa: BLE001 - the demo's own check: a model that does not load is its verdict
        raise HfgrowError(f"the demo's grown model does not load: {' '.join(str(exc).split())[:200]}.") from None
    issues = {key: list(value) for key, value in info.items() if value}
    prefix = "model.layers."
    src, out = source.state_dict(), model.state_dict()
    differing_layers = sorted({int(name[len(prefix):].split(".")[0]) for name, tensor in out.items()
                               if name.startswith(prefix) and not _same_as_source(name, tensor, src, layer_map, prefix)})
    differing_globals = [name for name, tensor in out.items()
                         if not name.startswith(prefix) and not (name in src and torch.equal(tensor, src[name]))]
    tokenizer = load_tokenizer(grown)
    ids = torch.tensor([token_stream(tokenizer, [text])])
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    return DemoCheck(layers=model.config.num_hidden_layers, expected_layers=len(layer_map), load_issues=issues,
                     layer_map=list(layer_map), differing_layers=differing_layers,
                     differing_globals=differing_globals, loss=loss if math.isfinite(loss) else float("nan"))


def _same_as_source(name: str, tensor, src: dict, layer_map: list[int], prefix: str) -> bool:
    import torch

    index, rest = name[len(prefix):].split(".", 1)
    if int(index) >= len(layer_map):
        return False
    twin = src.get(f"{prefix}{layer_map[int(index)]}.{rest}")
    return twin is not None and torch.equal(tensor, twin)
