"""`mailboot run`: the container's start, cold or warm.

- `run`: the one story of a start (warm on the last plan, else the full boot), the
  supervisor's command line, the hand-over;
- `stages`: the full boot's stages (keys, certificate, accounts, configuration, checks);
- `warmstart`: the plan a restart with nothing changed starts on;
- `records_and_address`: the public address, the outbound line and the records with their
  state, announced beside the daemons;
- `datadir`: DATA_DIR at every start; `handover`: the work beside the daemons and the exec of
  the supervisor.

May import: the floors below (`base` .. `diagnose`).
"""
