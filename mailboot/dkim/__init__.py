"""dkim: TODO docstring."""
