"""Failed logins and the bans they earn, across SMTP AUTH (465/587), IMAP and ManageSieve.

- `bans`: failures counted per address in a window, bans that end by themselves, kept across
  restarts, and who is never banned (loopback, the allowlist, a proxy standing for everyone).

May import: the floors below (`base`, `settings`, `dns`, `network`).
"""
