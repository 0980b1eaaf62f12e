"""G-up/right-learn (LiGO): fit a linear growth operator on text, then write it out through the pipeline."""
