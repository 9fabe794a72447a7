"""The DNS records to publish: built, printed, checked and watched.

- `build`: typed records, one builder per kind, grouped by zone;
- `published`: the one record set this server publishes, and its check where it is published;
- `doctor`: is each record published and does it mean what we need (findings, never raises);
- `zonefile`: the printed forms (zone file, table for web forms, JSON);
- `watch`: the worker's DNS checks, logging only changes.

May import: the floors below (`base` .. `acme`, `render`).
"""
