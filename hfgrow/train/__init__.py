"""Stage 4: (continued) pre-training on accelerate, with MSG masks, checkpoints and export to a model folder."""
