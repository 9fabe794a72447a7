"""Mailboxes and aliases below DATA_DIR/accounts.

- `accounts`: Dovecot's passwd-file, aliases, quotas, the lock every change takes;
- `bulk_import`: `mailboot account import`, many mailboxes in one write.

May import: `base`, `settings`, `dns`.
"""
