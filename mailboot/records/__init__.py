"""records: TODO docstring."""
