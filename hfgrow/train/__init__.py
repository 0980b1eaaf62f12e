"""Stage 4: (continued) pre-training on accelerate, one owner per concept.

    args         the options of ``hfgrow.continue`` and every cheap check of them (preflight)
    schedule     the LR: max LR by model size, linear warmup, cosine decay
    msg          MSG masks: new layers and width ramped in over the first steps
    checkpoints  checkpoint-N folders: find, read, write atomically, load
    runlog       run.json, log.jsonl, eval_observations.jsonl: written, read back (the one reader), plotted
    growth       --grow: its syntax, the stages of a run, the stage folders, AdamW moments carried through growth
    loop         the training run, top to bottom: setup, step-0 eval, loop (with any growth point), export
    export       a checkpoint as a Hugging Face model folder with the card of a trained model
    launch       ``hfgrow train``: the accelerate config checked against the machine, the launcher
"""
