"""Training and evaluation text: one file reader, one ``[NAME=]PATH|hf:NAME`` spec parser, one mixture
reader, and packing into fixed-length token sequences."""
