"""The policy process: one short-lived process, started on demand by the supervisor, that answers
every question the daemons ask us while mail moves.

- `delegation`: Postfix's policy delegation protocol (SMTPD_POLICY_README) on one stream;
- `socketmap`: Postfix's socketmap lookup protocol (socketmap_table(5)) on one stream;
- `authpolicy`: Dovecot's auth policy protocol (JSON over HTTP/1.1) on one stream;
- `service`: the process: each socket the supervisor hands over, served by its own protocol
  until none has been used for a while.

May import: the floors below (`base` .. `tls`, `daemons`, `inbound`, `logins`), never `web`
beside it.
"""
