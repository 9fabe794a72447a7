"""mailboxes: TODO docstring."""
