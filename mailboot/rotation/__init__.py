"""rotation: TODO docstring."""
