"""standards: TODO docstring."""
