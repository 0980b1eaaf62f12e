"""BiMix (Ge et al. 2024): entropy-driven data mixtures, the bivariate mixing law, and its optimal mixture."""
