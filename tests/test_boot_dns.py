"""The boot's record block: statuses when DNS_CHECK is on, and strict mode failing the boot."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from mailboot.base.errors import DnsNotReady, StateError
from mailboot.base.paths import Paths
from mailboot.boot.datadir import check_data_dir
from mailboot.boot.records_and_address import print_records
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Answer
from mailboot.records.build import build_record_groups
from mailboot.records.doctor import SHARED_FAILURE_HINT
from mailboot.settings.table import Settings


def nothing_published(name: str, rtype: str) -> Answer:
    return Answer(nxdomain=True)


def test_statuses_are_printed_and_strict_mode_fails_the_boot(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
) -> None:
    warn = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4="203.0.113.25")
    out = io.StringIO()
    print_records(warn, build_record_groups(warn, make_keys(warn)), nothing_published, out)
    assert "[MISSING]\n;   -> Add @ MX 10 mail.example.com." in out.getvalue()
    strict = make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4="203.0.113.25",
                           DNS_CHECK="strict")
    out = io.StringIO()
    with pytest.raises(DnsNotReady) as caught:
        print_records(strict, build_record_groups(strict, make_keys(strict)), nothing_published,
                      out)
    assert caught.value.exit_code == 78
    assert "example.com MX (missing)" in str(caught.value)
    assert "[MISSING]" in out.getvalue()  # the user still sees what to publish


def test_dns_unreachable_is_logged_once_and_each_record_says_so_briefly(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    settings = make_settings(MAIL_DOMAINS="example.com,example.org", PUBLIC_IPV4="203.0.113.25")
    reason = "no DNS server answered (10.0.0.2: timed out): can this container reach ..."

    def unreachable(name: str, rtype: str) -> Answer:
        return Answer(error=reason)

    out = io.StringIO()
    print_records(settings, build_record_groups(settings, make_keys(settings)), unreachable, out)
    assert caplog.text.count(reason) == 1
    assert f"dns: can't check the DNS records: {reason}" in caplog.text
    assert reason not in out.getvalue()
    hints = [line for line in out.getvalue().splitlines() if line.startswith(";   -> ")]
    assert len(hints) > 10
    assert set(hints) == {f";   -> {SHARED_FAILURE_HINT}"}


def test_dns_check_off_prints_no_statuses(
    make_settings: Callable[..., Settings],
    make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com", DNS_CHECK="off")
    out = io.StringIO()

    def must_not_be_called(name: str, rtype: str) -> Answer:
        raise AssertionError("DNS_CHECK=off must not look anything up")

    print_records(settings, build_record_groups(settings, make_keys(settings)),
                  must_not_be_called, out)
    assert "[OK]" not in out.getvalue() and "[MISSING]" not in out.getvalue()


def test_data_dir_that_is_a_file_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("not a directory\n")
    with pytest.raises(StateError) as caught:
        check_data_dir(Paths(data))
    assert "is a file, not a directory" in str(caught.value) and caught.value.exit_code == 78
    check_data_dir(Paths(tmp_path / "missing"))  # made later by the first stage that needs it
    assert not (tmp_path / "missing").exists()
