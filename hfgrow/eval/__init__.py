"""Measure models and growth: held-out loss, lm-eval hand-off, and the grow-vs-scratch experiment."""
