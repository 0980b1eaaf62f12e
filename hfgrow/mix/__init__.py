"""BiMix (Ge et al. 2024, arXiv 2405.14908): entropy-driven data mixtures, the bivariate mixing law, and its
optimal mixture.

    counts.py    tokenize each domain, count unigrams/bigrams, entropies, the entropy mixture
    law.py       evaluation observations, the per-domain fit, the law file
    optimize.py  the mixture that minimises a fitted law's total loss

Domain text is opened with :mod:`hfgrow.data.specs`; mixtures are read and written with
:mod:`hfgrow.data.mixture`.
"""
