"""The value parsers: host:port for name servers and the relay, numbers and durations.

Every variable's bad inputs, with the variable's name and example around the message, are in
test_settings.py; here are the parsers' own edges, one table each.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mailboot.settings.values import (
    LONGEST_FIRST_WAIT,
    SettingValueError,
    parse_connection_limit,
    parse_duration,
    parse_max_age,
    parse_relay_host,
    parse_resolvers,
)
from mailboot.tls.renewal import MAX_RETRY

HostPort = Callable[[str], tuple[str, int]]


def resolver(text: str) -> tuple[str, int]:
    """DNS_RESOLVERS with a single entry."""
    (found,) = parse_resolvers(text)
    return found


BOTH: list[tuple[str, HostPort]] = [("DNS_RESOLVERS", resolver), ("RELAY_HOST", parse_relay_host)]

# (text, host, port or None for the default): good for both parsers
GOOD_ADDRESSES: list[tuple[str, str, int | None]] = [
    ("192.0.2.53", "192.0.2.53", None),
    (" 192.0.2.53:5353 ", "192.0.2.53", 5353),
    ("192.0.2.53:053", "192.0.2.53", 53),
    ("192.0.2.53:000000000000000000000053", "192.0.2.53", 53),
    ("192.0.2.53:65535", "192.0.2.53", 65535),
    ("2001:db8::53", "2001:db8::53", None),
    ("2001:DB8:0:0::53", "2001:db8::53", None),  # normalised: one spelling per address
    ("[2001:db8::53]", "2001:db8::53", None),
    ("[2001:db8::53]:5353", "2001:db8::53", 5353),
    ("[::1]:1", "::1", 1),
    ("::1", "::1", None),
    ("[192.0.2.53]:5353", "192.0.2.53", 5353),
]


@pytest.mark.parametrize(("text", "host", "port"), GOOD_ADDRESSES)
def test_a_resolver_is_an_address_with_port_53_unless_given(text: str, host: str,
                                                            port: int | None) -> None:
    assert resolver(text) == (host, port or 53)


@pytest.mark.parametrize(("text", "host", "port"), GOOD_ADDRESSES)
def test_a_relay_takes_the_same_addresses_with_port_587_unless_given(text: str, host: str,
                                                                     port: int | None) -> None:
    assert parse_relay_host(text) == (host, port or 587)


@pytest.mark.parametrize(("text", "expected"), [
    ("smtp.relay.example.net", ("smtp.relay.example.net", 587)),
    ("SMTP.Relay.Example.NET.:465", ("smtp.relay.example.net", 465)),
    # Postfix's own spelling for "this host, no MX lookup" is welcome too.
    ("[smtp.relay.example.net]:25", ("smtp.relay.example.net", 25)),
    ("[smtp.relay.example.net]", ("smtp.relay.example.net", 587)),
    ("relay.bücher.de:2525", ("relay.xn--bcher-kva.de", 2525)),
])
def test_a_relay_may_be_a_name(text: str, expected: tuple[str, int]) -> None:
    assert parse_relay_host(text) == expected


def test_resolvers_are_a_list() -> None:
    assert parse_resolvers("192.0.2.1, [2001:db8::1]:5353,2001:db8::2") == (
        ("192.0.2.1", 53), ("2001:db8::1", 5353), ("2001:db8::2", 53))


# (text, what the message says): wrong for both parsers
BAD_SYNTAX = [
    ("[::1]:abc", "has a port that is not a number"),
    ("[::1]:53x", "has a port that is not a number"),
    ("192.0.2.53:dns", "has a port that is not a number"),
    ("192.0.2.53:-53", "has a port that is not a number"),
    ("192.0.2.53:+53", "has a port that is not a number"),
    ("192.0.2.53: 53", "has a port that is not a number"),
    ("192.0.2.53:\u00b2", "has a port that is not a number"),  # superscript two: int() refuses
    ("192.0.2.53:\u0665\u0663", "has a port that is not a number"),  # Arabic-Indic 53: int() takes
    ("[::1]x", "has 'x' after ']', where only :port may follow"),
    ("[::1]53", "has '53' after ']'"),
    ("[::1] :53", "after ']'"),
    ("[::1]:", "ends in ':' with no port"),
    ("192.0.2.53:", "ends in ':' with no port"),
    ("[::1", "opens '[' without closing it"),
    ("[::1:53", "opens '[' without closing it"),
    ("192.0.2.53:0", "has a port outside 1-65535"),
    ("192.0.2.53:65536", "has a port outside 1-65535"),
    ("[::1]:99999", "has a port outside 1-65535"),
    ("192.0.2.53:" + "9" * 5000, "has a port outside 1-65535"),  # int() refuses 4300+ digits
    (":53", "has no host before the port"),
    ("[]:53", "has no host before the port"),
    ("::1:53:x", "is neither an IPv6 address nor host:port; write an IPv6 address with a port"),
    ("192.0.2.53:53:53", "is neither an IPv6 address nor host:port"),
    ("::1]:53", "is neither an IPv6 address nor host:port"),
    ("https://192.0.2.53", "looks like a URL"),
]


@pytest.mark.parametrize(("variable", "parse"), BOTH, ids=[name for name, _ in BOTH])
@pytest.mark.parametrize(("text", "says"), BAD_SYNTAX)
def test_bad_host_port(variable: str, parse: HostPort, text: str, says: str) -> None:
    with pytest.raises(SettingValueError) as caught:
        parse(text)
    assert says in str(caught.value)


@pytest.mark.parametrize(("text", "says"), [
    ("dns.example.com", "'dns.example.com' is not an IP address (name servers are given by "
                        "address"),
    ("dns.example.com:53", "is not an IP address"),
    ("[dns.example.com]:53", "is not an IP address"),
    ("192.0.2.300", "is not an IP address"),
])
def test_a_resolver_must_be_an_address(text: str, says: str) -> None:
    with pytest.raises(SettingValueError) as caught:
        resolver(text)
    assert says in str(caught.value)


@pytest.mark.parametrize(("text", "says"), [
    ("smtp_relay.example.net", "'smtp_relay.example.net' is not host[:port]: the host "
                               "'smtp_relay.example.net' is not a valid domain name"),
    ("[smtp_relay.example.net]:587", "is not host[:port]"),
    ("relay:587", "is not host[:port]: the host 'relay' is not a fully-qualified domain name"),
])
def test_a_relay_name_must_be_a_domain_name(text: str, says: str) -> None:
    with pytest.raises(SettingValueError) as caught:
        parse_relay_host(text)
    assert says in str(caught.value)


@pytest.mark.parametrize(("text", "says"), [
    ("192.0.2.53,[::1]:abc", "'[::1]:abc' has a port that is not a number"),
    ("192.0.2.53,,192.0.2.54", "empty entry"),
])
def test_every_resolver_in_the_list_is_checked(text: str, says: str) -> None:
    with pytest.raises(SettingValueError) as caught:
        parse_resolvers(text)
    assert says in str(caught.value)


# --- numbers and durations ------------------------------------------------------------------------

@pytest.mark.parametrize(("parse", "text", "expected"), [
    (parse_connection_limit, "1_000", 1000),
    (parse_connection_limit, " 0010 ", 10),
    (parse_duration, "1", 1),
    (parse_duration, "90s", 90),
    (parse_duration, "5 m", 300),
    (parse_duration, "1H", 3600),
    (parse_max_age, "4w", 4 * 604800),
    (parse_max_age, "31557600", 31557600),
])
def test_numbers(parse: Callable[[str], int], text: str, expected: int) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(("parse", "text", "says"), [
    (parse_connection_limit, "\u00b2\u00b2", "is not a whole number"),  # int() refuses these
    (parse_connection_limit, "\u0661\u0660\u0660", "is not a whole number"),  # Arabic-Indic 100
    (parse_connection_limit, "-100", "is not a whole number"),
    (parse_connection_limit, "9" * 5000, "is outside 10 to 100000"),
    (parse_duration, "\u0665m", "is not a duration"),  # Arabic-Indic 5
    (parse_duration, "0s", "is outside 1 second to 1 hour"),
    (parse_duration, "61m", "is outside 1 second to 1 hour"),
    (parse_duration, "2h", "is outside 1 second to 1 hour"),
    # A huge first wait used to pass, then overflow the worker's date arithmetic.
    (parse_duration, "99999999999999w", "is outside 1 second to 1 hour"),
    (parse_duration, "9" * 5000, "is outside 1 second to 1 hour"),
    (parse_duration, "1.5m", "is not a duration"),
    (parse_max_age, "9" * 5000 + "w", "is outside 1 second to 31557600 seconds"),
    (parse_max_age, "\u0661d", "is not a duration"),
])
def test_bad_numbers(parse: Callable[[str], int], text: str, says: str) -> None:
    with pytest.raises(SettingValueError) as caught:
        parse(text)
    assert says in str(caught.value)


def test_the_longest_first_wait_is_the_longest_backoff() -> None:
    assert MAX_RETRY.total_seconds() == LONGEST_FIRST_WAIT
