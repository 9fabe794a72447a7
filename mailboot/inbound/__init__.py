"""inbound: TODO docstring."""
