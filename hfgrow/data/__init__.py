"""Training and evaluation text, from files to packed token sequences.

    text.py      the one reader of local .txt/.md/.jsonl/.parquet (and .gz) files
    specs.py     the one ``[NAME=]PATH|hf:NAME[:CONFIG][:SPLIT]`` parser and opener of a spec's documents
    mixture.py   the one mixture-file reader, validator and writer
    tokenization.py  the one token-stream rule (the tokenizer's BOS before and EOS after every document)
    packing.py   shuffling and packing text into
                 sequences, the per-sequence domain draws, and build_data (text or token folder) for training
    tokens.py    token folders (hfgrow tokenize): the format, the parallel writer, memory-mapped reading and the
                 rank-local sampler
    jsonfile.py  strict JSON reading and atomic writes of the small JSON files data and mix own
"""
