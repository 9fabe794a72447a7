"""mailboot: one container that turns a bare server and a domain into a working mail server.

A map of the package, from the top floor down (imports only go down; tests keep it so):

- `cli`, `cli_accounts`, `cli_dkim`: the `mailboot` command; the one place errors become exit
  codes, and where the production clock, DNS lookup and daemon checks are chosen.
- `warmstart`: a restart with nothing changed starts on the last full boot's plan (the
  entrypoint tries it first; it imports none of the boot's libraries).
- `boot`: the boot story, one logged stage each: settings -> (`datadir`) -> DKIM keys -> TLS ->
  accounts -> rendered configuration -> the daemons' own checks -> prepared state; then
  `announce` (public address, DNS records and their check) runs beside the daemons while the
  process becomes the supervisor (`process`: the log, the work beside, the hand-over).
- `worker`: the background tasks (the certificate keeper, DNS checks, DKIM rotation, network
  checks) as short runs the supervisor starts when one is due; each task's memory is kept
  between runs in a state file (`taskstate`); a failing task is retried, never fatal.
- `inbound_policy`: the port-25 policy process, started by the supervisor on smtpd's first
  question (socket activation) and ended when idle; `inbound`
  (what it decides beyond postscreen and the milters: SPF fail without DMARC, a blocklist
  refusing our resolver, Docker's proxy), `smtp_policy` (Postfix's policy protocol),
  `publicsuffix` (DMARC's organizational domain).
- `render`: the daemons' configuration from templates/ (which mirrors /etc).
- `dnsrecords` (typed records, one builder per kind), `dnsformat` (zone file, table, JSON),
  `dnscheck` (the DNS doctor: findings, never exceptions), `dnsspf` (SPF evaluated as receivers
  do), `dnslookup` and `dnsanswer` (what a lookup answers), `dnswatch`.
- `tls/`: certificates, ACME, renewal timing and ARI, pre-checks, the web servers (see its map).
- `daemons/`: one module per daemon (unbound, opendkim, opendmarc, dovecot, postfix),
  `registry.DAEMONS` (the one
  list the boot and the supervisor iterate over), the `supervisor` (the one resident Python
  process) and its short `children` (the worker's runs; ports 80 and 443 on demand).
- `accounts`, `dkim`, `health`: mailboxes and aliases, DKIM keys, the container's health check;
  `dkimstate` (which key signs, which waits, which was replaced) and `dkimrotation` (the
  worker's switch once a new key's record is served, and the retirement after the grace).
- Ground floor: `settings` (one table of environment variables -> frozen `Settings`), `parse`
  (the value parsers), `errors` (every error the user can meet, with its exit code), `paths`
  (every location, re-rootable for tests), `files` (atomic writes), `commands` (running
  programs with a fixed environment), `users` (the image's system users), `listen` (listening
  sockets without importing more than `socket`).
"""

__version__ = "0.2.0"
