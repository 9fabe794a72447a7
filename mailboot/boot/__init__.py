"""boot: TODO docstring."""
