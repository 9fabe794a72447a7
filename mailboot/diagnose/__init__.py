"""Is everything in place? What the operator asks.

- `status`: one look at each part and the verdict (`mailboot status`);
- `selftest`: our mail judged as receivers judge it (`mailboot selftest`);
- `health`: the container's health check (run as `python3 -P -m mailboot.health`);
- `queue`: Postfix's queue in numbers; `problems`: the worker's last warnings and errors;
- `metrics`: the Prometheus page and its sources; `metrics_child`: METRICS_PORT, on demand.

May import: the floors below (`base` .. `rotation`).
"""
