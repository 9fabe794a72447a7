"""The mail daemons: one module each, one list (`registry.DAEMONS`), and the supervisor.

A daemon's module holds its whole story: its binaries, the templates rendered for it, how its
configuration is checked by its own parser, what it needs prepared on disk, how it reloads, and
the argv the supervisor runs. Adding a daemon is its module, its templates and one entry in
`registry.DAEMONS`. The modules import nothing heavy (the supervisor imports them for its whole
life) and never import each other.

- `unbound`, `opendkim`, `opendmarc`, `dovecot`, `postfix`: one module per daemon;
- `daemon`: what is known of a daemon (one frozen record); `registry`: the one list;
- `supervisor`: the one resident Python process; `on_demand`: its short children (the worker's
  runs; ports 80 and 443 and the port-25 policy service on demand).

May import: `base`, `settings` (a daemon's module: nothing else).
"""
