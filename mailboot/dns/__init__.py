"""dns: TODO docstring."""
