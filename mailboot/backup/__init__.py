"""backup: TODO docstring."""
