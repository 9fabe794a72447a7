"""Settings: every variable's bad inputs, defaults, IDN conversion, and all problems at once."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mailboot.errors import ConfigError
from mailboot.settings import SETTINGS_BY_NAME, TABLE, load_settings, settings_markdown

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
    ("ACME_RETRY_INTERVAL", "0", "not a duration"),
    ("ACME_RETRY_INTERVAL", "soon", "not a duration"),
    ("DNS_CHECK", "yes", "not one of warn, strict, off"),
    ("DNS_CHECK_INTERVAL", "never", "not a duration"),
    ("DNS_RESOLVERS", "dns.example.com", "not an IP address"),
    ("DNS_RESOLVERS", "192.0.2.53:99999", "outside 1-65535"),
    ("DNS_RESOLVERS", "192.0.2.53:dns", "not a number"),
    ("DNS_RESOLVERS", "192.0.2.53,", "empty entry"),
    ("IMAP_MAX_CONNECTIONS", "many", "not a whole number"),
    ("IMAP_MAX_CONNECTIONS", "5", "outside 10 to 100000"),
    ("IMAP_MAX_CONNECTIONS", "1e6", "not a whole number"),
    ("RELAY_HOST", "smtp.example.net:submission", "not a number"),
    ("RELAY_HOST", "smtp.example.net:0", "outside 1-65535"),
    ("RELAY_HOST", "smtp_relay.example.net", "not host[:port]"),
    ("RELAY_HOST", "[2001:db8::1]587", "not host[:port]"),
    ("RELAY_USER", "api key", "white space"),
    ("RELAY_USER", "user:name", "contains a colon"),
    ("RELAY_PASSWORD", "two\nlines", "line break"),
    ("RELAY_PASSWORD_FILE", "secrets/relay", "relative path"),
    ("RELAY_SPF_INCLUDE", "ip4:192.0.2.1", "not a valid domain name"),
    ("RELAY_SPF_INCLUDE", "relay", "at least two labels"),
    ("RELAY_SPF_INCLUDE", "%{i}._spf.example.net", "not a valid domain name"),
]


@pytest.mark.parametrize(("variable", "value", "reason"), BAD_INPUTS)
def test_bad_value_never_echoes_a_secret(variable: str, value: str, reason: str) -> None:
    if SETTINGS_BY_NAME[variable].secret:
        with pytest.raises(ConfigError) as caught:
            load_settings({**GOOD, variable: value})
        assert value not in str(caught.value)


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
    assert settings.dmarc_rua == ()
    assert settings.tlsrpt_rua == ("mailto:postmaster@example.com",)
    assert settings.mta_sts_mode == "enforce"
    assert settings.mta_sts_max_age == 86400
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
