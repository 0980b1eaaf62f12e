"""Growth operators: pure functions from a source layout to a :class:`hfgrow.io.plan.Plan`."""
