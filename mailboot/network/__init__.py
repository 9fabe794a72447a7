"""network: TODO docstring."""
