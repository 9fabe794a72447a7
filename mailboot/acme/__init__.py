"""acme: TODO docstring."""
