"""Mail throughput: messages per second submitted, DKIM-signed and delivered to a mailbox.

Postfix's `smtp-source` runs inside the container and submits the messages over 20 parallel
sessions to a submission service on 127.0.0.1 that the benchmark adds (the real submission
services need TLS and a login, which smtp-source doesn't speak); that service runs the same
OpenDKIM milter as 465/587, or none for the unsigned figure. Mail is delivered over LMTP to
Dovecot, and the clock stops when the last message is in the Maildir: every one is counted.

Port 25 with the inbound checks: smtp-source sends from the container's own network address
(not in mynetworks, so nothing is skipped) to port 25, as another server would: postscreen (its
cache warmed by one message first, as a regular sender's address is), the DBL and policy
checks, OpenDKIM verifying and OpenDMARC, then Sieve at delivery. Sender and recipient are
foreign and local names whose DNS answers come from the container's resolver.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import Figure, Mail, Report, create_mail, median

USER = "bench@example.com"
SESSIONS = 20
MAILDIR = "/data/mail/example.com/bench/Maildir"
INBOUND_SENDER = "sender@example.net"


def add_injection_service(mail: Mail, port: int, signed: bool) -> None:
    milters = "inet:127.0.0.1:8891" if signed else ""
    entry = (f"127.0.0.1:{port} inet n - n - - smtpd -o syslog_name=postfix/bench "
             f"-o smtpd_milters={milters} -o smtpd_client_restrictions=permit_mynetworks,reject "
             "-o smtpd_relay_restrictions=permit_mynetworks,reject")
    mail.exec("postconf", "-M", f"127.0.0.1:{port}/inet={entry}")
    mail.exec("postfix", "reload")
    time.sleep(1)


def delivered(mail: Mail) -> int:
    output = mail.exec("sh", "-c", f"find {MAILDIR}/new {MAILDIR}/cur -type f 2>/dev/null | "
                                   "wc -l").stdout.strip()
    return int(output or 0)


def one_run(mail: Mail, port: int, messages: int, host: str = "127.0.0.1",
            sender: str = USER) -> float:
    before = delivered(mail)
    started = time.monotonic()
    mail.exec("smtp-source", "-c", "-m", str(messages), "-s", str(SESSIONS), "-l", "2048",
              "-f", sender, "-t", USER, f"{host}:{port}", timeout=1800)
    deadline = time.monotonic() + 600
    while (count := delivered(mail) - before) < messages:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {count} of {messages} messages arrived")
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    if count != messages:
        raise RuntimeError(f"{count} messages arrived for {messages} sent")
    return messages / elapsed


def signature_present(mail: Mail) -> bool:
    newest = mail.exec("sh", "-c", f"ls -t {MAILDIR}/new | head -1").stdout.strip()
    return "DKIM-Signature:" in mail.exec("head", "-c", "4000", f"{MAILDIR}/new/{newest}").stdout


def run(report: Report, arguments: argparse.Namespace) -> None:
    figures = report.section("Mail throughput", __doc__ or "")
    mail = create_mail({"MAIL_DOMAINS": "example.com", "TLS_MODE": "self-signed",
                        "DNS_CHECK": "off"})
    try:
        mail.start_and_wait()
        mail.exec("mailboot", "account", "add", USER, "--password-stdin",
                  stdin="bench password\n")
        add_injection_service(mail, 10587, signed=True)
        add_injection_service(mail, 10588, signed=False)
        rates: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(arguments.runs):
            for signed, port in ((True, 10587), (False, 10588)):
                rates[signed].append(one_run(mail, port, arguments.messages))
                if signature_present(mail) != signed:
                    raise RuntimeError(f"signed={signed}, but the last message says otherwise")
        own_address = mail.exec("hostname", "-i").stdout.split()[0]
        one_run(mail, 25, 1, own_address, INBOUND_SENDER)  # postscreen now knows the address
        inbound = [one_run(mail, 25, arguments.messages, own_address, INBOUND_SENDER)
                   for _ in range(arguments.runs)]
        if "postscreen" not in mail.logs() or "opendmarc" not in mail.logs():
            raise RuntimeError("port 25 was not judged by postscreen and OpenDMARC")
    finally:
        mail.remove()
    signed_rate, unsigned_rate = median(rates[True]), median(rates[False])
    figures += [
        Figure(f"DKIM-signed, {arguments.messages:,} messages over {SESSIONS} sessions",
               f"{signed_rate:.0f} msg/s", "", ", ".join(f"{r:.0f}" for r in rates[True])),
        Figure("the same, signing turned off", f"{unsigned_rate:.0f} msg/s", "",
               ", ".join(f"{r:.0f}" for r in rates[False])),
        Figure("ratio signed / unsigned", f"{signed_rate / unsigned_rate:.2f}", "", ""),
        Figure(f"port 25 with the inbound checks, {arguments.messages:,} messages over "
               f"{SESSIONS} sessions", f"{median(inbound):.0f} msg/s", "",
               ", ".join(f"{r:.0f}" for r in inbound)),
    ]
