"""Settings: every variable's bad inputs, defaults from the table, IDN conversion, all problems
at once, and secrets that no message repeats."""

from __future__ import annotations

import dataclasses
import io
import ipaddress
import typing
from pathlib import Path

import pytest

from mailboot.base.errors import ConfigError
from mailboot.cli.main import main
from mailboot.settings import table as settings_module
from mailboot.settings.table import (
    LETS_ENCRYPT,
    SETTINGS_BY_NAME,
    TABLE,
    Settings,
    load_settings,
    settings_markdown,
)
from mailboot.settings.values import SettingValueError

GOOD = {"MAIL_DOMAINS": "example.com", "DATA_DIR": "/srv/mail"}
# A valid pair, so that one bad half of it is the only problem reported.
EAB = {"ACME_EAB_KID": "kid-1", "ACME_EAB_HMAC_KEY": "c2VjcmV0"}

# (variable, bad value, words the problem must contain)
BAD_INPUTS = [
    ("MAIL_DOMAINS", "", "is required"),
    ("MAIL_DOMAINS", "   ", "is required"),
    ("MAIL_DOMAINS", "localhost", "not a fully-qualified domain name"),
    ("MAIL_DOMAINS", "example", "not a fully-qualified domain name"),
    ("MAIL_DOMAINS", "203.0.113.5", "is an IP address"),
    ("MAIL_DOMAINS", "[2001:db8::1]", "is an IP address"),
    ("MAIL_DOMAINS", "https://example.com", "looks like a URL"),
    ("MAIL_DOMAINS", "example.com/path", "looks like a URL"),
    ("MAIL_DOMAINS", "user@example.com", "looks like an email address"),
    ("MAIL_DOMAINS", "exa mple.com", "white space"),
    ("MAIL_DOMAINS", "*.example.com", "wildcard"),
    ("MAIL_DOMAINS", "ex_ample.com", "not a valid domain name"),
    ("MAIL_DOMAINS", "-example.com", "not a valid domain name"),
    ("MAIL_DOMAINS", "example-.com", "not a valid domain name"),
    ("MAIL_DOMAINS", "exa..mple.com", "not a valid domain name"),
    ("MAIL_DOMAINS", "a" * 64 + ".com", "not a valid domain name"),
    ("MAIL_DOMAINS", ".".join(["a" * 60] * 5) + ".com", "longer than 253"),
    ("MAIL_DOMAINS", "example.123", "numeric label"),
    ("MAIL_DOMAINS", "xn--zz.com", "not a valid domain name"),
    ("MAIL_DOMAINS", "☃.net", "not a valid domain name"),
    ("MAIL_DOMAINS", "example.com,example.com", "lists 'example.com' twice"),
    ("MAIL_DOMAINS", "bücher.de,xn--bcher-kva.de", "lists 'xn--bcher-kva.de' twice"),
    ("MAIL_DOMAINS", "Example.COM,example.com.", "twice"),
    ("MAIL_DOMAINS", "example.com,,example.org", "empty entry"),
    ("MAIL_DOMAINS", "example.com,", "empty entry"),
    ("MAIL_HOSTNAME", "mail", "not a fully-qualified domain name"),
    ("MAIL_HOSTNAME", "203.0.113.5", "is an IP address"),
    ("MAIL_HOSTNAME", "mail.example.com,mx.example.com", "not a valid domain name"),
    ("PUBLIC_IPV4", "203.0.113", "not an IP address"),
    ("PUBLIC_IPV4", "mail.example.com", "not an IP address"),
    ("PUBLIC_IPV4", "203.0.113.0/24", "is a network"),
    ("PUBLIC_IPV4", "2001:db8::1", "put it in PUBLIC_IPV6"),
    ("PUBLIC_IPV4", "0.0.0.0", "can't be a server's address"),
    ("PUBLIC_IPV4", "224.0.0.1", "can't be a server's address"),
    ("PUBLIC_IPV6", "203.0.113.5", "put it in PUBLIC_IPV4"),
    ("PUBLIC_IPV6", "::", "can't be a server's address"),
    ("PUBLIC_IPV6", "ff02::1", "can't be a server's address"),
    ("PUBLIC_IPV6", "::ffff:203.0.113.5", "IPv4-mapped"),
    ("PUBLIC_IPV6", "2001:db8::zz", "not an IP address"),
    ("DATA_DIR", "data", "relative path"),
    ("DATA_DIR", "./data", "relative path"),
    ("DMARC_POLICY", "strict", "not one of none, quarantine, reject"),
    ("DMARC_POLICY", "p=reject", "not one of"),
    ("DMARC_RUA", "reports", "not an email address"),
    ("DMARC_RUA", "@example.com", "not an email address"),
    ("DMARC_RUA", "reports@localhost", "the domain"),
    ("DMARC_RUA", "a;b@example.com", "local part"),
    ("DMARC_RUA", "a!b@example.com", "local part"),
    ("DMARC_RUA", "reports@example.com,", "empty entry"),
    ("DMARC_RUA", "https://example.com/dmarc", "not an email address"),
    ("TLSRPT_RUA", "reports", "not an email address"),
    ("TLSRPT_RUA", "https://", "not a usable https URI"),
    ("TLSRPT_RUA", "https://example.com/a;b", "not a usable https URI"),
    ("MTA_STS_MODE", "on", "not one of enforce, testing, none"),
    ("MTA_STS_MAX_AGE", "forever", "not a duration"),
    ("MTA_STS_MAX_AGE", "0", "outside 1 second"),
    ("MTA_STS_MAX_AGE", "2y", "not a duration"),
    ("MTA_STS_MAX_AGE", "60w", "outside 1 second"),
    ("TLS_MODE", "letsencrypt", "not one of acme, manual, self-signed"),
    ("TLS_CERT_FILE", "certs/fullchain.pem", "relative path"),
    ("TLS_KEY_FILE", "privkey.pem", "relative path"),
    ("ACME_DIRECTORY", "http://acme.example.com/dir", "not an https:// URL"),
    ("ACME_DIRECTORY", "acme-v02.api.letsencrypt.org", "not an https:// URL"),
    ("ACME_EMAIL", "hostmaster", "not an email address"),
    ("ACME_CA_BUNDLE", "ca.pem", "relative path"),
    ("ACME_EAB_KID", "two words", "white space"),
    ("ACME_EAB_HMAC_KEY", "not/base64+", "not base64url"),
    ("ACME_RETRY_INTERVAL", "0", "outside 1 second to 1 hour"),
    ("ACME_RETRY_INTERVAL", "2h", "outside 1 second to 1 hour"),
    ("ACME_RETRY_INTERVAL", "soon", "not a duration"),
    ("DNS_CHECK", "yes", "not one of warn, strict, off"),
    ("DNS_CHECK_INTERVAL", "never", "not a duration"),
    ("DNS_CHECK_INTERVAL", "99999999999999w", "outside 1 second to 1 hour"),
    ("DKIM_ALGORITHMS", "ed25519", "leaves out rsa"),
    ("DKIM_ALGORITHMS", "rsa,dsa", "not a DKIM algorithm"),
    ("DKIM_ALGORITHMS", "rsa,,ed25519", "empty entry"),
    ("DKIM_ROTATION_GRACE", "soon", "not a duration"),
    ("DKIM_ROTATION_GRACE", "0s", "outside 1 second to 366 days"),
    ("DKIM_ROTATION_GRACE", "400d", "outside 1 second to 366 days"),
    ("DNS_FORWARDERS", "dns.example.com", "not an IP address"),
    ("DNS_FORWARDERS", "[::1]:abc", "port that is not a number"),
    ("DNS_FORWARDERS", "192.0.2.53,,192.0.2.54", "empty entry"),
    ("DNSBL", ",", "is empty"),
    ("DNSBL", "zen.spamhaus.org=127.0.0", "is not four octets"),
    ("DNSBL", "zen.spamhaus.org=127.0.0.[2..11*3", "is not four octets"),
    ("DNSBL", "zen.spamhaus.org*many", "is not zone[=filter][*weight]"),
    ("DNSBL", "zen.spamhaus.org*1000", "weight is outside"),
    ("DNSBL", "localhost=127.0.0.2", "is not a DNS zone"),
    ("SPAMHAUS_DQS_KEY", "short", "is not a Spamhaus DQS key"),
    ("SPAMHAUS_DQS_KEY", "abc-def-ghi-jkl", "is not a Spamhaus DQS key"),
    ("DNSSEC_VALIDATION", "maybe", "maybe"),
    ("DNS_RESOLVERS", "dns.example.com", "not an IP address"),
    ("DNS_RESOLVERS", "192.0.2.53:99999", "outside 1-65535"),
    ("DNS_RESOLVERS", "192.0.2.53:dns", "not a number"),
    ("DNS_RESOLVERS", "192.0.2.53,", "empty entry"),
    ("DNS_RESOLVERS", "[::1]:abc", "port that is not a number"),
    ("DNS_RESOLVERS", "[::1]x", "only :port may follow"),
    ("DNS_RESOLVERS", "[::1", "without closing it"),
    ("DNS_RESOLVERS", "192.0.2.53:", "with no port"),
    ("IMAP_MAX_CONNECTIONS", "many", "not a whole number"),
    ("IMAP_MAX_CONNECTIONS", "5", "outside 10 to 100000"),
    ("IMAP_MAX_CONNECTIONS", "1e6", "not a whole number"),
    ("IMAP_MAX_CONNECTIONS", "\u00b2\u00b2", "not a whole number"),
    ("RELAY_HOST", "smtp.example.net:submission", "not a number"),
    ("RELAY_HOST", "smtp.example.net:0", "outside 1-65535"),
    ("RELAY_HOST", "smtp_relay.example.net", "not host[:port]"),
    ("RELAY_HOST", "[2001:db8::1]587", "only :port may follow"),
    ("RELAY_HOST", "[2001:db8::1]:abc", "port that is not a number"),
    ("RELAY_HOST", "smtp.example.net:", "with no port"),
    ("RELAY_HOST", "smtp.example.net:65536", "outside 1-65535"),
    ("RELAY_USER", "api key", "white space"),
    ("RELAY_USER", "user:name", "contains a colon"),
    ("RELAY_PASSWORD", "two\nlines", "line break"),
    ("RELAY_PASSWORD_FILE", "secrets/relay", "relative path"),
    ("RELAY_SPF_INCLUDE", "ip4:192.0.2.1", "not a valid domain name"),
    ("RELAY_SPF_INCLUDE", "relay", "at least two labels"),
    ("RELAY_SPF_INCLUDE", "%{i}._spf.example.net", "not a valid domain name"),
    ("CAA_ISSUER", "letsencrypt", "not a fully-qualified domain name"),
    ("CAA_ISSUER", "lets encrypt.org", "documents for CAA"),
    ("OUTBOUND_CHECK", "smtp://mx.example.net", "looks like a URL"),
    ("OUTBOUND_CHECK", "mx.example.net:smtp", "port that is not a number"),
    ("OUTBOUND_CHECK", "localhost", "not host[:port]"),
    ("OUTBOUND_CHECK", "[2001:db8::1", "without closing it"),
    ("MAILBOX_QUOTA", "5 gigs", "is not a size"),
    ("MAILBOX_QUOTA", "0", "is not a size"),
    ("PUBLIC_ADDRESS_DISCOVERY", "ns1.google.com", "is not NAME@SERVER[:PORT]"),
    ("PUBLIC_ADDRESS_DISCOVERY", "o-o.myaddr.l.google.com@", "is not NAME@SERVER[:PORT]"),
    ("PUBLIC_ADDRESS_DISCOVERY", "myaddr@ns1.google.com", "the name"),
    ("PUBLIC_ADDRESS_DISCOVERY", "whoami.example@192.0.2.53:99999", "outside 1-65535"),
    ("PUBLIC_ADDRESS_DISCOVERY", "whoami.example@ns_1.example", "not host[:port]"),
    ("REPUTATION_CHECK", "daily", "is not one of on, off"),
    ("TLS_TRUST_CA_FILE", "certs/ca.pem", "relative path"),
    ("TLS_TRUST_CA_FILE", "/nonexistent/ca.pem", "can't be read"),
    ("TLS_TRUST_CA_FILE", "/proc/version", "holds no PEM certificate"),
    ("LOGIN_BAN_FAILURES", "many", "not a whole number (or off)"),
    ("LOGIN_BAN_FAILURES", "1", "outside 3 to 1000"),
    ("LOGIN_BAN_FAILURES", "5000", "outside 3 to 1000"),
    ("LOGIN_BAN_WINDOW", "a while", "not a duration"),
    ("LOGIN_BAN_WINDOW", "0", "outside 1 second to a day"),
    ("LOGIN_BAN_WINDOW", "2d", "outside 1 second to a day"),
    ("LOGIN_BAN_DURATION", "forever", "not a duration"),
    ("LOGIN_BAN_DURATION", "0s", "outside 1 second to 30 days"),
    ("LOGIN_BAN_DURATION", "31d", "outside 1 second to 30 days"),
    ("LOGIN_BAN_ALLOWLIST", "office", "not an address or a network"),
    ("LOGIN_BAN_ALLOWLIST", "192.0.2.7/24", "host bits set"),
    ("LOGIN_BAN_ALLOWLIST", "192.0.2.0/24,,2001:db8::/48", "empty entry"),
    ("SEND_LIMIT_MESSAGES_PER_DAY", "0", "outside 1 to 10,000,000; for no limit, say off"),
    ("SEND_LIMIT_MESSAGES_PER_DAY", "lots", "is not a whole number; give one, or off"),
    ("SEND_LIMIT_FIRST_TIME_RECIPIENTS_PER_DAY", "-5", "is not a whole number"),
    ("SEND_LIMIT_FIRST_TIME_RECIPIENTS_PER_DAY", "20000000", "outside 1 to 10,000,000"),
    ("METRICS_PORT", "on", "is not a TCP port (1 to 65535) nor off"),
    ("METRICS_PORT", "65536", "is not a TCP port"),
    ("METRICS_PORT", "0", "is not a TCP port"),
    ("METRICS_PORT", "443", "port 443 is taken by the mail services; choose another"),
    ("METRICS_PORT", "8896", "port 8896 is taken"),
    ("ALERT_TO", "owner", "is not an email address"),
    ("ALERT_TO", "owner@example", "not a fully-qualified domain name"),
    ("ALERT_TO", "o wner@example.net", "local part"),
]


@pytest.mark.parametrize(("variable", "value", "reason"), BAD_INPUTS)
def test_bad_value_names_variable_reason_and_example(
    variable: str, value: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, **EAB, variable: value})
    (problem,) = caught.value.problems
    assert problem.startswith(f"{variable}: ")
    assert reason in problem
    assert f"(example: {variable}=" in problem
    assert caught.value.exit_code == 78


def test_every_setting_has_bad_inputs_tested() -> None:
    tested = {variable for variable, _, _ in BAD_INPUTS}
    assert tested == {setting.name for setting in TABLE}


def test_every_problem_is_reported_at_once() -> None:
    environ = {
        "MAIL_DOMAINS": "example.com,localhost",
        "PUBLIC_IPV4": "2001:db8::1",
        "DATA_DIR": "relative",
        "DMARC_POLICY": "maybe",
        "MTA_STS_MODE": "on",
    }
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    named = [problem.split(":")[0] for problem in caught.value.problems]
    assert named == ["MAIL_DOMAINS", "PUBLIC_IPV4", "DATA_DIR", "DMARC_POLICY", "MTA_STS_MODE"]


def test_combinations() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, "TLS_MODE": "manual", "ACME_EAB_KID": "kid"})
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "TLS_CERT_FILE", "TLS_KEY_FILE", "ACME_EAB_HMAC_KEY"]
    settings = load_settings({**GOOD, "TLS_MODE": "manual", "TLS_CERT_FILE": "/c/chain.pem",
                              "TLS_KEY_FILE": "/c/key.pem", "DNS_RESOLVERS": "192.0.2.1,[::1]:53"
                              ",198.51.100.2:5353"})
    assert settings.tls_cert_file == Path("/c/chain.pem")
    assert settings.dns_resolvers == (("192.0.2.1", 53), ("::1", 53), ("198.51.100.2", 5353))


def test_defaults() -> None:
    settings = load_settings({"MAIL_DOMAINS": "example.com"})
    assert settings.domains == ("example.com",)
    assert settings.hostname == "mail.example.com"
    assert settings.public_ipv4 is None and settings.public_ipv6 is None
    assert settings.data_dir == Path("/data")
    assert settings.dmarc_policy == "reject"
    assert settings.dmarc_rua == ("mailto:dmarc-reports@example.com",)
    assert settings.tlsrpt_rua == ("mailto:tls-reports@example.com",)
    assert settings.mta_sts_mode == "enforce"
    assert settings.mta_sts_max_age == 86400
    assert settings.dns_resolvers == ()
    assert settings.relay_host is None and settings.relay_password is None
    # 1,000 people with a phone and a laptop in IDLE, twice over (see the table).
    assert settings.imap_max_connections == 4000
    assert settings.warnings == ()


def test_values_are_normalised() -> None:
    settings = load_settings({
        "MAIL_DOMAINS": " Example.COM. , bücher.de ,MÜNCHEN.example",
        "MAIL_HOSTNAME": "MX.Example.com",
        "PUBLIC_IPV4": " 198.51.100.7 ",
        "PUBLIC_IPV6": "[2001:DB8::7]",
        "DMARC_POLICY": "Quarantine",
        "DMARC_RUA": "mailto:Reports@Bücher.de, other@example.com",
        "TLSRPT_RUA": "https://reports.example.com/tlsrpt,tls@example.com",
        "MTA_STS_MODE": "TESTING",
        "MTA_STS_MAX_AGE": "2w",
    })
    assert settings.domains == ("example.com", "xn--bcher-kva.de", "xn--mnchen-3ya.example")
    assert settings.primary_domain == "example.com"
    assert settings.hostname == "mx.example.com"
    assert settings.public_ipv4 == ipaddress.IPv4Address("198.51.100.7")
    assert settings.public_ipv6 == ipaddress.IPv6Address("2001:db8::7")
    assert settings.dmarc_policy == "quarantine"
    assert settings.dmarc_rua == ("mailto:Reports@xn--bcher-kva.de", "mailto:other@example.com")
    assert settings.tlsrpt_rua == (
        "https://reports.example.com/tlsrpt",
        "mailto:tls@example.com",
    )
    assert settings.mta_sts_mode == "testing"
    assert settings.mta_sts_max_age == 2 * 604800


def test_non_public_address_is_a_warning_not_an_error() -> None:
    settings = load_settings({**GOOD, "PUBLIC_IPV4": "10.0.0.5", "PUBLIC_IPV6": "fd00::5"})
    assert settings.public_ipv4 == ipaddress.IPv4Address("10.0.0.5")
    assert len(settings.warnings) == 2
    assert settings.warnings[0].startswith("PUBLIC_IPV4: 10.0.0.5 is not a public address")


def test_global_address_gives_no_warning() -> None:
    settings = load_settings({**GOOD, "PUBLIC_IPV4": "8.8.4.4", "PUBLIC_IPV6": "2a00:1450::1"})
    assert settings.warnings == ()


def test_misspelt_variable_is_warned_about_with_a_suggestion() -> None:
    settings = load_settings({**GOOD, "MAIL_HOSTNAM": "mx.example.com", "PATH": "/bin"})
    assert settings.warnings == (
        "MAIL_HOSTNAM is not a mailboot setting and is ignored; did you mean MAIL_HOSTNAME?",
    )


def test_settings_are_frozen() -> None:
    settings = load_settings(GOOD)
    with pytest.raises(AttributeError):
        settings.hostname = "other.example.com"  # type: ignore[misc]


def test_sending_limits_default_to_mox_s_and_may_be_off() -> None:
    assert load_settings(GOOD).sending_limits == (1000, 200)
    settings = load_settings({**GOOD, "SEND_LIMIT_MESSAGES_PER_DAY": " 1_500 ",
                              "SEND_LIMIT_FIRST_TIME_RECIPIENTS_PER_DAY": "OFF"})
    assert settings.send_limit_first_time_recipients_per_day == "off"
    assert settings.sending_limits == (1500, None)


def test_alerts_go_to_the_primary_domain_s_postmaster_unless_told_otherwise() -> None:
    assert load_settings(GOOD).alert_to == f"postmaster@{load_settings(GOOD).primary_domain}"
    assert load_settings({**GOOD, "ALERT_TO": "Owner@Bücher.example"}).alert_to == \
        "Owner@xn--bcher-kva.example"
    assert load_settings({**GOOD, "ALERT_TO": " OFF "}).alert_to == "off"


def test_readme_settings_table_is_generated_from_the_code() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert settings_markdown() in readme, "run `mailboot settings` and paste it into README.md"


def test_relay_credentials_come_together_with_a_relay(tmp_path: Path) -> None:
    password = tmp_path / "relay_password"
    password.write_text("from a file\n")
    settings = load_settings({**GOOD, "RELAY_HOST": "smtp.relay.example.net",
                              "RELAY_USER": "apikey", "RELAY_PASSWORD_FILE": str(password)})
    assert settings.relay_host == ("smtp.relay.example.net", 587)
    assert settings.relay_password == "from a file"
    assert any("RELAY_SPF_INCLUDE" in warning for warning in settings.warnings)
    for environ, expected in [
        ({"RELAY_USER": "apikey", "RELAY_PASSWORD": "x"}, "RELAY_HOST: is required"),
        ({"RELAY_HOST": "smtp.relay.example.net", "RELAY_USER": "apikey"},
         "RELAY_PASSWORD_FILE or RELAY_PASSWORD: is required"),
        ({"RELAY_HOST": "smtp.relay.example.net", "RELAY_PASSWORD": "x"},
         "RELAY_USER: is required"),
        ({"RELAY_HOST": "r.example.net", "RELAY_USER": "u", "RELAY_PASSWORD": "x",
          "RELAY_PASSWORD_FILE": str(password)}, "keep one"),
        ({"RELAY_HOST": "r.example.net", "RELAY_USER": "u",
          "RELAY_PASSWORD_FILE": str(tmp_path / "missing")}, "can't be read"),
    ]:
        with pytest.raises(ConfigError) as caught:
            load_settings({**GOOD, **environ})
        assert any(problem.startswith(expected) or expected in problem
                   for problem in caught.value.problems), caught.value.problems


def test_a_relay_without_credentials_is_allowed_and_the_include_is_normalised() -> None:
    settings = load_settings({**GOOD, "RELAY_HOST": "192.0.2.25:25",
                              "RELAY_SPF_INCLUDE": "include:_spf.Relay.example.net"})
    assert settings.relay_host == ("192.0.2.25", 25)
    assert settings.relay_user is None and settings.relay_password is None
    assert settings.relay_spf_include == "_spf.relay.example.net"
    assert not settings.warnings


# --- defaults come from the table only -----------------------------------------------------------

def test_every_settings_field_is_filled_by_exactly_one_table_entry() -> None:
    fields = dataclasses.fields(Settings)
    table_fields = [setting.field for setting in TABLE]
    assert len(table_fields) == len(set(table_fields))
    assert len(SETTINGS_BY_NAME) == len(TABLE)
    # `warnings` is the one field load_settings makes itself (the Settings docstring says so).
    assert {field.name for field in fields} == {*table_fields, "warnings"}
    # No default of its own: a default kept in Settings would be one the table doesn't show.
    assert all(field.default is dataclasses.MISSING
               and field.default_factory is dataclasses.MISSING for field in fields)


def test_a_field_may_be_none_exactly_when_its_variable_may_stay_unset() -> None:
    hints = typing.get_type_hints(Settings)
    for setting in TABLE:
        may_be_none = type(None) in typing.get_args(hints[setting.field])
        stays_unset = setting.default is None and setting.derive is None and not setting.required
        assert may_be_none == stays_unset, setting.name


def test_an_unset_variable_takes_the_table_default_or_derivation() -> None:
    settings = load_settings({"MAIL_DOMAINS": "example.com"})
    values = {field.name: getattr(settings, field.name) for field in dataclasses.fields(Settings)}
    for setting in TABLE[1:]:  # all but MAIL_DOMAINS, which is required
        expected = (setting.parse(setting.default) if setting.default is not None else
                    setting.derive(values) if setting.derive is not None else None)
        assert values[setting.field] == expected, setting.name


def test_the_documented_default_is_the_default() -> None:
    shown = {LETS_ENCRYPT: "Let's Encrypt"}
    for setting in TABLE:
        if setting.default is not None:
            assert setting.default_doc == shown.get(setting.default, f"`{setting.default}`")
        assert (setting.default_doc == "required") == setting.required, setting.name


# --- secrets never appear in a message ------------------------------------------------------------

# What each secret needs beside it to be used, so that it can be the only thing right or wrong.
PARTNERS = {
    "ACME_EAB_HMAC_KEY": {"ACME_EAB_KID": "kid-1"},
    "RELAY_PASSWORD": {"RELAY_HOST": "smtp.relay.example.net", "RELAY_USER": "apikey"},
}
# (variable, value, whether its parser takes it); no word of a value occurs in any message text
SECRET_VALUES = [
    ("ACME_EAB_HMAC_KEY", "Zq9/not+base64url", False),
    ("ACME_EAB_HMAC_KEY", "Zq9Xk2Wp7===", False),
    ("ACME_EAB_HMAC_KEY", "Zq9Xk2 Wp7Rt5", False),
    ("ACME_EAB_HMAC_KEY", "Zq9Xk2Wp7Rt5Vb3", True),
    ("RELAY_PASSWORD", "Zq9-first\nWp7-second", False),
    ("RELAY_PASSWORD", "Zq9-first\rWp7-second", False),
    ("RELAY_PASSWORD", "Zq9 Xk2-Wp7 Rt5!", True),
    ("RELAY_PASSWORD", "Zq9:Xk2@Wp7", True),
]
# How the rest of the configuration fails beside the secret.
FAILING: dict[str, typing.Callable[[str], dict[str, str]]] = {
    "another-variable-is-wrong": lambda variable: {**PARTNERS[variable], "MAIL_HOSTNAME": "mail"},
    "its-partners-are-missing": lambda variable: {},
}


def assert_not_shown(secret: str, text: str) -> None:
    """Neither the secret, nor its repr(), nor any word of it is in `text`."""
    shown = [piece for piece in {secret, repr(secret)[1:-1], *secret.split()} if piece in text]
    assert not shown, f"the secret shows as {shown} in:\n{text}"


def failure_text(environ: dict[str, str], capsys: pytest.CaptureFixture[str]) -> str:
    """The ConfigError of `environ`, and all that `mailboot dns` prints about it."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    out = io.StringIO()
    assert main(["dns"], environ=environ, stdout=out) == 78
    printed = capsys.readouterr()
    return "\n".join([str(caught.value), printed.out, printed.err, out.getvalue()])


def test_the_secret_values_cover_every_secret_good_and_bad() -> None:
    assert set(PARTNERS) == {setting.name for setting in TABLE if setting.secret}
    assert {(variable, parses) for variable, _, parses in SECRET_VALUES} == {
        (variable, parses) for variable in PARTNERS for parses in (True, False)}
    for variable, value, parses in SECRET_VALUES:
        try:
            SETTINGS_BY_NAME[variable].parse(value)
        except SettingValueError:
            assert not parses, value
        else:
            assert parses, value


@pytest.mark.parametrize("failing", FAILING)
@pytest.mark.parametrize(("variable", "value", "parses"), SECRET_VALUES)
def test_no_message_repeats_a_secret(variable: str, value: str, parses: bool, failing: str,
                                     tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environ = {**GOOD, "DATA_DIR": str(tmp_path / "data"), **FAILING[failing](variable),
               variable: value}
    assert_not_shown(value, failure_text(environ, capsys))


@pytest.mark.parametrize(("variable", "value", "parses"), SECRET_VALUES)
def test_the_secret_check_catches_a_parser_that_quotes_its_input(
    variable: str, value: str, parses: bool, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    def quoting(text: str) -> str:
        raise SettingValueError(f"{text!r} is not right")

    table = tuple(dataclasses.replace(setting, parse=quoting) if setting.name == variable
                  else setting for setting in TABLE)
    monkeypatch.setattr(settings_module, "TABLE", table)
    environ = {**GOOD, "DATA_DIR": str(tmp_path / "data"),
               **FAILING["another-variable-is-wrong"](variable), variable: value}
    with pytest.raises(AssertionError, match="the secret shows"):
        assert_not_shown(value, failure_text(environ, capsys))


@pytest.mark.parametrize(("variable", "value"),
                         [(variable, value) for variable, value, parses in SECRET_VALUES if parses])
def test_accepted_settings_show_no_secret(variable: str, value: str) -> None:
    settings = load_settings({**GOOD, **PARTNERS[variable], variable: value})
    assert getattr(settings, SETTINGS_BY_NAME[variable].field) == value
    # A Settings in a log line or a traceback's locals must not carry the secret along.
    assert_not_shown(value, "\n".join([repr(settings), str(settings), *settings.warnings]))


@pytest.mark.parametrize(("content", "words", "parses"), [
    (b"Zq9-first\nWp7-second\n", "Zq9-first Wp7-second", False),
    (b"Zq9-first\xff\xfeWp7-second\n", "Zq9-first Wp7-second", False),
    (b"Zq9 Xk2-Wp7 Rt5!\n", "Zq9 Xk2-Wp7 Rt5!", True),
])
def test_no_message_repeats_the_password_file(content: bytes, words: str, parses: bool,
                                              tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "relay_password"
    secret.write_bytes(content)
    environ = {**GOOD, "DATA_DIR": str(tmp_path / "data"), "RELAY_HOST": "smtp.relay.example.net",
               "RELAY_USER": "apikey", "RELAY_PASSWORD_FILE": str(secret)}
    text = failure_text({**environ, "MAIL_HOSTNAME": "mail"}, capsys)
    assert_not_shown(words, text)
    assert "0xff" not in text and "0xfe" not in text  # what UTF-8 decoding stumbled on
    if parses:
        assert_not_shown(words, repr(load_settings(environ)))


def test_a_password_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    secret = tmp_path / "relay_password"
    secret.write_bytes(b"Zq9\xff\n")
    with pytest.raises(ConfigError) as caught:
        load_settings({**GOOD, "RELAY_HOST": "smtp.relay.example.net", "RELAY_USER": "apikey",
                       "RELAY_PASSWORD_FILE": str(secret)})
    assert caught.value.problems == (
        f"RELAY_PASSWORD_FILE: {secret} is not UTF-8 text; save the password in it as UTF-8, "
        "alone on one line",)
