"""The settings: environment -> one frozen `Settings`, every problem reported at once.

- `table`: the one table of environment variables (name, field, parser, default, meaning);
- `values`: the value parsers (domains, addresses, durations, sizes, host:port, ...).

May import: `base`.
"""
