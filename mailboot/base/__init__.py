"""base: TODO docstring."""
