"""The `mailboot` command: the one place errors become exit codes and production's clock,
DNS lookup and daemon checks are chosen.

- `main`: the parser and the commands (`dns`, `run`, `status`, `selftest`, ...);
- `accounts`, `dkim`, `backup`, `bans`, `reports`: their commands; `status_view`: `mailboot
  status` printed.

May import: everything below.
"""
