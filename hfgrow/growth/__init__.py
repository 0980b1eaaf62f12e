"""Stage 3: growth. Operators build pure plans (``ops/``), the pipeline runs one end to end (plan, executor,
card, recipe), LiGO learns a growth operator (``ligo/``), and ``timing`` says when to grow."""
