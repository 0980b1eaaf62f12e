"""The ``hfgrow`` command: one small module per command group, each importing its stage lazily."""
