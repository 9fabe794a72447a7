"""web: TODO docstring."""
