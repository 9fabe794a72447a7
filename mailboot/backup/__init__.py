"""`mailboot backup` and `mailboot restore`.

- `archive`: the archive format (a tar stream and its manifest);
- `take`: an archive of DATA_DIR taken while the server runs;
- `restore`: an archive put back into DATA_DIR, all of it or nothing.

May import: `base`, `settings`, `dns`.
"""
