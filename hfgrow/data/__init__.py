"""Training and evaluation text, from files to packed token sequences.

    text.py          the one reader of local .txt/.md/.jsonl/.parquet (and .gz) files (opened through io/folder)
    specs.py         the one ``[NAME=]PATH|hf:NAME[:CONFIG][:SPLIT]`` parser and opener of a spec's documents
    mixture.py       the one mixture-file reader and validator
    tokenization.py  the one token-stream rule (the tokenizer's BOS before and EOS after every document), a
                     tokenizer's vocabulary size and EOS
    packing.py       shuffling and packing text into sequences, the per-sequence domain draws
    token_folder.py  the token-folder format (what hfgrow tokenize writes): its checked index, memory-mapped domains
    tokens.py        token folders: the parallel writer and the rank-local sampler
    loading.py       build_data: the training and held-out data of a run (text or token folders)
    jsonfile.py      strict reading of the small JSON files data and mix own (writes: io/output.atomic_write)
"""
