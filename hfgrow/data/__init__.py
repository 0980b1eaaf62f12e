"""Training and evaluation text, from files to packed token sequences.

    text.py      the one reader of local .txt/.md/.jsonl/.parquet (and .gz) files
    specs.py     the one ``[NAME=]PATH|hf:NAME[:CONFIG][:SPLIT]`` parser and opener of a spec's documents
    mixture.py   the one mixture-file reader, validator and writer
    packing.py   the one token-stream rule (EOS after every document, no BOS) and packing into sequences
    jsonfile.py  strict JSON reading and atomic writes of the small JSON files data and mix own
"""
