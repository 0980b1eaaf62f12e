"""The one rule that turns documents into tokens, and the tokenizer facts every reader of text needs.

Every document is tokenized as its tokenizer would start it and followed by EOS::

    BOS d1 EOS BOS d2 EOS ... BOS dN EOS        (a tokenizer that adds BOS: Gemma, Llama 2/3, Mistral)
        d1 EOS     d2 EOS ...     dN EOS        (one that adds nothing: GPT-2, Qwen, SmolLM2)

"BOS" is whatever the tokenizer itself puts before a text when asked for its special tokens
(:func:`document_prefix`: ``tokenizer(text)`` minus ``tokenizer(text, add_special_tokens=False)``,
usually one BOS id or nothing), so a model sees documents begin the way its authors trained it; a
model trained with a BOS is far off its function without one. EOS ends every document whatever the
tokenizer does (most add none): it is the boundary signal between packed documents.

A :class:`~hfgrow.data.text.DocPart` (a piece of a long plain-text file) goes on in the next item,
so it gets no EOS; a :class:`~hfgrow.data.text.DocRest` goes on from the previous item, so it gets
no BOS. :func:`token_stream` is the rule for a list of documents, :class:`Tokenize` the same rule
for batches of a longer stream. Training (text and token folders, whose index records the prefix),
``hfgrow eval``, ``hfgrow mix entropy``, ``hfgrow tokenize``, LiGO and ``hfgrow verify`` all use it.

Example:
    >>> token_stream(tok, ["a b", "c"])      # doctest: +SKIP
    [64, 65, 0, 66, 0]
    >>> token_stream(gemma_tok, ["a b", "c"])      # doctest: +SKIP
    [2, 235250, 518, 1, 2, 235260, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from hfgrow.data.text import DocPart, DocRest
from hfgrow.errors import HfgrowError

READ_BATCH_UNITS = 16  # documents tokenized together (fast tokenizers batch in Rust)
_EOS_NAMES = ("</s>", "<|endoftext|>", "<eos>", "<|end_of_text|>")  # for a bare tokenizers.Tokenizer
_PROBE = "Hello world"  # a text every tokenizer encodes to ordinary tokens


def tokenizer_vocab_size(tokenizer: Any) -> int:
    """One more than the largest id a tokenizer can produce (added tokens included).

    Not simply ``len(tokenizer)``: a vocabulary may have holes in its ids.

    Example:
        >>> tokenizer_vocab_size(AutoTokenizer.from_pretrained("gpt2"))   # doctest: +SKIP
        50257
    """
    if hasattr(tokenizer, "get_vocab_size"):  # tokenizers.Tokenizer
        size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        vocab = tokenizer.get_vocab(with_added_tokens=True)
    else:
        size = int(len(tokenizer))
        vocab = tokenizer.get_vocab()
    return max(size, max(vocab.values(), default=-1) + 1)


def eos_id(tokenizer: Any) -> int:
    """The EOS id that ends every document.

    A Hugging Face tokenizer's ``eos_token_id``; a bare ``tokenizers.Tokenizer`` (which has no
    such attribute) gets the first of ``</s>``, ``<|endoftext|>``, ``<eos>``, ``<|end_of_text|>``
    it knows.

    Raises:
        HfgrowError: the tokenizer has no EOS token.

    Example:
        >>> eos_id(AutoTokenizer.from_pretrained("gpt2"))                 # doctest: +SKIP
        50256
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None and hasattr(tokenizer, "token_to_id"):
        eos = next((i for i in map(tokenizer.token_to_id, _EOS_NAMES) if i is not None), None)
    if eos is None:
        raise HfgrowError("the tokenizer has no EOS token to end documents with; give it one (eos_token).")
    return int(eos)


def document_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer puts before a text when it adds its special tokens: ``[bos_id]`` or ``[]``.

    Read from the tokenizer itself (its post-processor or ``add_bos_token``): the ids of
    ``tokenizer(text)`` before those of ``tokenizer(text, add_special_tokens=False)``. A bare
    ``tokenizers.Tokenizer`` is asked the same through ``encode``. Whatever it adds after a text is
    not used (EOS ends every document anyway).

    Raises:
        HfgrowError: the tokenizer's special tokens do not surround the text (they cannot be told apart).

    Example:
        >>> document_prefix(AutoTokenizer.from_pretrained("gpt2"))                # doctest: +SKIP
        []
        >>> document_prefix(AutoTokenizer.from_pretrained("google/gemma-3-270m"))  # doctest: +SKIP
        [2]
    """
    if hasattr(tokenizer, "encode_batch_fast"):  # a tokenizers.Tokenizer
        full = tokenizer.encode(_PROBE, add_special_tokens=True).ids
        plain = tokenizer.encode(_PROBE, add_special_tokens=False).ids
    else:
        full = list(tokenizer(_PROBE, add_special_tokens=True, verbose=False)["input_ids"])
        plain = list(tokenizer(_PROBE, add_special_tokens=False, verbose=False)["input_ids"])
    for k in range(len(full) - len(plain) + 1):
        if full[k : k + len(plain)] == plain:
            return [int(t) for t in full[:k]]
    raise HfgrowError("the tokenizer's special tokens do not surround a text's own tokens, so where a document "
                      "starts cannot be read from it; use a tokenizer whose post-processor adds tokens only "
                      "before and after the text.")


def batch_encoder(tokenizer: Any) -> Callable[[list[str]], list[list[int]]]:
    """A function list[str] -> id lists, identical to ``tokenizer(texts, add_special_tokens=False)``.

    For Hugging Face fast tokenizers (and bare ``tokenizers.Tokenizer`` objects) this calls the
    Rust backend's ``encode_batch_fast`` directly (no offsets, no BatchEncoding), with the same
    special-token handling as ``__call__``; a backend with truncation or padding switched on, and
    anything else, goes through ``__call__``.

    Example:
        >>> batch_encoder(tok)(["a b", "c"])                                # doctest: +SKIP
        [[64, 275], [66]]
    """
    backend = None
    if hasattr(tokenizer, "encode_batch_fast"):  # a tokenizers.Tokenizer
        backend = tokenizer
    elif getattr(tokenizer, "is_fast", False) and hasattr(tokenizer, "backend_tokenizer"):
        backend = tokenizer.backend_tokenizer
        split = bool(getattr(tokenizer, "split_special_tokens", False))
        if backend.encode_special_tokens != split:
            backend.encode_special_tokens = split
    # __call__ switches a backend's own truncation/padding off for the call; the fast path cannot
    if backend is not None and hasattr(backend, "encode_batch_fast") and backend.truncation is None \
            and backend.padding is None:

        def encode(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]

        return encode

    def encode_slow(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]

    return encode_slow


class Tokenize:
    """The token-stream rule for batches: each text's ids, the tokenizer's document prefix (BOS, if it
    adds one) before every document and EOS after it.

    A text ends its document unless it is a :class:`~hfgrow.data.text.DocPart` (or ``ends`` says
    otherwise); it starts one unless it is a :class:`~hfgrow.data.text.DocRest`.

    Example:
        >>> tokenize = Tokenize(tok)                                        # doctest: +SKIP
        >>> tokenize(["a b", DocPart("c "), DocRest("d")])   # a b EOS c d EOS   # doctest: +SKIP
        [64, 275, 0, 66, 220, 67, 0]
    """

    def __init__(self, tokenizer: Any):
        self.eos = eos_id(tokenizer)
        self.bos = document_prefix(tokenizer)
        self.encode = batch_encoder(tokenizer)

    def per_text(self, texts: list[str], ends: Sequence[bool] | None = None) -> list[list[int]]:
        """The ids of every text, the document prefix put before a document's start, EOS after its end."""
        if ends is None:
            ends = [not isinstance(t, DocPart) for t in texts]
        ids = self.encode(list(texts)) if texts else []
        bos = self.bos
        return [(seq if isinstance(text, DocRest) or not bos else bos + seq) + ([self.eos] if end else [])
                for text, seq, end in zip(texts, ids, ends)]

    def __call__(self, texts: list[str], ends: Sequence[bool] | None = None) -> list[int]:
        return [t for seq in self.per_text(texts, ends) for t in seq]


def token_stream(tokenizer: Any, documents: Iterable[str], *, max_tokens: int | None = None) -> list[int]:
    """The token stream of documents: ``BOS d1 EOS ... BOS dN EOS`` (BOS where the tokenizer adds one; see the
    module docstring).

    Documents are tokenized in batches; with ``max_tokens`` reading stops once that many tokens are
    there and the stream is cut to exactly ``max_tokens``.

    Example:
        >>> ids = token_stream(tok, ["the cat", "a dog"])                    # doctest: +SKIP
        >>> ids == tok("the cat")["input_ids"] + [tok.eos_token_id] \\
        ...        + tok("a dog")["input_ids"] + [tok.eos_token_id]  # a tokenizer that adds no EOS  # doctest: +SKIP
        True
    """
    tokenize = Tokenize(tokenizer)
    out: list[int] = []
    batch: list[str] = []
    for doc in documents:
        batch.append(doc)
        if len(batch) >= READ_BATCH_UNITS:
            out.extend(tokenize(batch))
            batch = []
            if max_tokens is not None and len(out) >= max_tokens:
                return out[:max_tokens]
    out.extend(tokenize(batch))
    return out if max_tokens is None else out[:max_tokens]


# ---------------------------------------------------------------------------------------------
# Packing
# ---------------------------------------------------------------------------------------------
