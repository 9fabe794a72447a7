"""The background worker: certificate keeping, DNS checks, DKIM rotation and network checks,
as short runs the supervisor starts when one is due.

- `tasks`: the tasks, their state between runs, and `python3 -P -m mailboot.worker.tasks`;
- `alerts`: the owner told by mail when something turns bad, and when it is good again.

May import: the floors below (`base` .. `diagnose`).
"""
