"""diagnose: TODO docstring."""
