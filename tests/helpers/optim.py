"""A model with a few AdamW steps behind it, for tests of optimizer state carried through a growth."""

from __future__ import annotations


def stepped_adamw(model, steps: int = 3, seq: int = 16):
    """AdamW over ``model`` after ``steps`` steps on random ids (seed it first); returns the optimizer."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        ids = torch.randint(0, model.config.vocab_size, (2, seq))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
    return opt
