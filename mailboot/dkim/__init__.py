"""DKIM keys and their state.

- `keys`: the keys per domain, created once below DATA_DIR and never overwritten;
- `state`: which key signs, which waits for its record, which were replaced.

May import: `base`, `settings`, `dns`.
"""
