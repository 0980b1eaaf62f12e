"""Stage 2: what a model is. The only package that knows architectures, all of it derived from the
checkpoint's tensor names, its config and a meta-device skeleton (no table of families)."""
