"""mailboot: one container that turns a bare server and a domain into a working mail server.

One package per concern, on floors: a package imports only from the floors below it, never
sideways or up (tests/test_architecture.py holds it). From the ground up:

1. `base`: errors, paths, atomic files, programs, users, sockets, task state
2. `settings`: the one table of environment variables and its value parsers
3. `dns`: answers, lookups, the host names we answer for
4. `standards` (SPF, DMARC's organizational domain, MTA-STS) · `dkim` · `mailboxes` ·
   `backup` · `network`
5. `tls` (certificates, keys, DANE) · `daemons` (one module per daemon, the supervisor) ·
   `inbound` (the port-25 checks) · `outbound` (SRS, receivers' MTA-STS, sending limits) ·
   `logins` (failed logins and bans)
6. `web`: the port-80 and port-443 servers, clients' settings · `policy`: the process the
   daemons ask while mail moves, started on demand
7. `acme`: the ACME client, ARI, CAA, pre-checks, the certificate keeper
8. `render`: the daemons' configuration from templates/
9. `records`: the records to publish, their check (the DNS doctor), printed forms, the watch
10. `rotation`: DKIM key rotation and the TLS key rollover
11. `diagnose`: status, selftest, health, queue, problems
12. `worker` (the background tasks) · `boot` (`mailboot run`, cold or warm)
13. `cli`: the `mailboot` command

`health` here is the name the image's HEALTHCHECK and the Kubernetes probes run
(`python3 -P -m mailboot.health`); the check lives in `diagnose.health`.
"""

__version__ = "0.2.0"
