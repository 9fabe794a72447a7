"""DANE for inbound mail: kept certificate keys, TLSA records only in signed zones, and a key
rollover that waits for the next key's record (fake DNS as data, a fake CA, a fixed clock)."""

from __future__ import annotations

import logging
import stat
import subprocess
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import dns.zone
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mailboot.acme.issuer import Issued
from mailboot.acme.keeper import Keeper, keeper_for
from mailboot.base.paths import Paths
from mailboot.dkim.keys import DomainKeys
from mailboot.dns.answer import Answer
from mailboot.dns.lookup import _parent
from mailboot.dns.names import tlsa_name
from mailboot.records import zonefile
from mailboot.records.build import Kind, all_records, build_record_groups
from mailboot.records.doctor import Status, check_records
from mailboot.rotation.tls_key import KeyRollover
from mailboot.settings.table import Settings
from mailboot.tls import certificates
from mailboot.tls import keys as tlskeys
from mailboot.tls.dane import TlsaSource
from mailboot.web.challenges import ChallengeStore
from mailboot.worker import tasks as worker
from tests.conftest import NOW, FakeCa, require_tool
from tests.keeper_world import HOST, World

NAME = "_25._tcp.mail.example.com"
DnsData = dict[tuple[str, str], Answer]


def lookup_from(data: DnsData, asked: list[tuple[str, str]] | None = None
                ) -> Callable[[str, str], Answer]:
    def lookup(name: str, rtype: str) -> Answer:
        if asked is not None:
            asked.append((name, rtype))
        return data.get((name.rstrip("."), rtype), Answer())
    return lookup


SIGNED: DnsData = {("example.com", "DS"): Answer(("2371 13 2 ABCDEF0123",))}


def test_the_tlsa_value_is_the_sha256_of_the_spki_as_openssl_computes_it(tmp_path: Path) -> None:
    openssl = require_tool("openssl")
    paths = Paths(tmp_path)
    keys = tlskeys.ensure_keys(paths)
    spki = subprocess.run([openssl, "pkey", "-in", str(paths.tls_keys_dir / "current.pem"),
                           "-pubout", "-outform", "DER"], capture_output=True, check=True).stdout
    digest = subprocess.run([openssl, "dgst", "-sha256", "-r"], input=spki, capture_output=True,
                            check=True).stdout.split()[0].decode()
    assert keys.current == f"3 1 1 {digest}"
    assert keys.next != keys.current


def test_keys_are_private_made_once_and_never_overwritten(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    first = tlskeys.ensure_keys(paths)
    files = {name: (paths.tls_keys_dir / name).read_bytes() for name in ("current.pem",
                                                                         "next.pem")}
    for name in files:
        assert stat.S_IMODE((paths.tls_keys_dir / name).stat().st_mode) == 0o600
    assert tlskeys.ensure_keys(paths, adopt=b"ignored: current.pem exists") == first
    assert {n: (paths.tls_keys_dir / n).read_bytes() for n in files} == files
    # A certificate installed in tls/ leaves the keys' directory alone.
    certificates.ensure_certificate(paths, ["mail.example.com"], NOW)
    certificates.ensure_certificate(paths, ["mail.example.com", "other.example.com"], NOW)
    assert tlskeys.ensure_keys(paths) == first


def test_the_temporary_certificate_can_be_made_with_the_kept_key(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    key_pem = tlskeys.current_key(paths)
    live = certificates.ensure_certificate(paths, ["mail.example.com"], NOW, key_pem)
    assert tlskeys.is_current_key(paths, live.key_path.read_bytes())


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(MAIL_DOMAINS="example.com", PUBLIC_IPV4=HOST,
                         ACME_RETRY_INTERVAL="5m", DNS_CHECK_INTERVAL="1m")


def test_tlsa_records_only_when_the_zone_is_signed(
    settings: Settings, make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    paths = Paths(settings.data_dir)
    asked: list[tuple[str, str]] = []
    unsigned = TlsaSource(settings, paths, lookup_from({}, asked))
    assert unsigned() is None and unsigned() is None
    assert asked == [("example.com", "DS")] * 2
    assert caplog.text.count("dns: no TLSA (DANE) records: example.com is not DNSSEC-signed "
                             "(no DS at its parent); sign the zone") == 1  # said once
    failing = TlsaSource(settings, paths, lambda _n, _t: Answer(error="timed out"))
    assert failing() is None
    assert "is unknown: the question for its DS record got no answer" in caplog.text

    tlsa = TlsaSource(settings, paths, lookup_from(SIGNED))()
    assert tlsa == tlskeys.ensure_keys(paths)
    groups = build_record_groups(settings, make_keys(settings), None, tlsa)
    found = [r for r in all_records(groups) if r.kind is Kind.TLSA]
    assert [(r.name, r.rtype, r.value, r.zone) for r in found] == [
        (NAME, "TLSA", tlsa.current, "example.com"), (NAME, "TLSA", tlsa.next, "example.com")]
    assert not [r for r in all_records(build_record_groups(settings, make_keys(settings)))
                if r.kind is Kind.TLSA]
    # The zone file loads, and holds the two records as DNS servers see them.
    zone = dns.zone.from_text(zonefile.zone_text(groups[:1]), origin="example.com.",
                              relativize=False, check_origin=False)
    rdataset = zone.find_rdataset(NAME + ".", "TLSA")
    assert sorted(r.to_text() for r in rdataset) == sorted([tlsa.current, tlsa.next])


def test_the_tlsa_query_for_ds_goes_to_the_parent() -> None:
    assert _parent("example.com") == "com" and _parent("com.") == "."


def test_each_tlsa_record_is_judged_on_its_own_whatever_the_case(
    settings: Settings, make_keys: Callable[[Settings], tuple[DomainKeys, ...]],
) -> None:
    tlsa = tlskeys.ensure_keys(Paths(settings.data_dir))
    records = [r for r in all_records(build_record_groups(settings, make_keys(settings), None,
                                                          tlsa)) if r.kind is Kind.TLSA]
    upper = "3 1 1 " + tlsa.current.split()[-1].upper()
    findings = check_records(records, lookup_from({(NAME, "TLSA"): Answer((upper,))}))
    assert [f.status for f in findings] == [Status.OK, Status.MISSING]
    assert findings[1].hint.startswith(f"Add _25._tcp.mail TLSA {tlsa.next} at the DNS provider")
    assert not findings[0].record.required


# --- keeping the key, and rolling it over ---------------------------------------------------


class KeptKeyCa(FakeCa):
    """A fake CA whose client orders with the kept key, as AcmeIssuer does."""

    def __init__(self, paths: Paths) -> None:
        super().__init__()
        self.paths = paths

    def issue(self, names: Sequence[str]) -> Issued:
        issued = super().issue(names)
        key_pem = tlskeys.current_key(self.paths)
        leaf = x509.load_pem_x509_certificate(issued.chain_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        rebuilt = (x509.CertificateBuilder().subject_name(leaf.subject).issuer_name(self.name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(leaf.not_valid_before_utc)
                   .not_valid_after(leaf.not_valid_after_utc)
                   .add_extension(leaf.extensions.get_extension_for_class(
                       x509.SubjectAlternativeName).value, False)
                   .sign(self.key, hashes.SHA256()))
        return Issued(key_pem, rebuilt.public_bytes(serialization.Encoding.PEM))


def served_tlsa(paths: Paths) -> str:
    live = certificates.read_live(paths)
    assert live is not None
    return tlskeys.key_tlsa(live.key_path.read_bytes())


def make_rollover(settings: Settings, data: DnsData, ca: KeptKeyCa) -> tuple[KeyRollover, World]:
    world = World()
    world.dns = {"mail.example.com": {HOST}, "mta-sts.example.com": {HOST}}
    paths = Paths(settings.data_dir)
    store = ChallengeStore(paths.acme_challenges)
    keeper: Keeper = keeper_for(settings, paths, lambda: ca, world.resolve,
                                world.fetch_through(store), store, lambda: None)
    return KeyRollover(settings, paths, keeper, lookup_from(data),
                       timedelta(seconds=settings.dns_check_interval)), world


def test_renewals_keep_the_key(settings: Settings) -> None:
    paths = Paths(settings.data_dir)
    ca = KeptKeyCa(paths)
    task, _ = make_rollover(settings, dict(SIGNED), ca)
    keys = tlskeys.ensure_keys(paths)
    task.step(NOW)
    first = certificates.read_live(paths)
    later = NOW + timedelta(days=61)  # a third of 90 days left: renewal is due
    ca.now = later
    task.step(later)
    second = certificates.read_live(paths)
    assert len(ca.orders) == 2 and first is not None and second is not None
    assert second.directory != first.directory
    assert served_tlsa(paths) == keys.current == tlskeys.ensure_keys(paths).current


def test_a_rollover_switches_only_once_the_next_record_is_served(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    paths = Paths(settings.data_dir)
    ca = KeptKeyCa(paths)
    keys = tlskeys.ensure_keys(paths)
    data = {**SIGNED, (NAME, "TLSA"): Answer((keys.current,))}
    task, _ = make_rollover(settings, data, ca)
    task.step(NOW)
    assert served_tlsa(paths) == keys.current and len(ca.orders) == 1
    task.step(NOW + timedelta(minutes=1))
    # No polling for a request: the supervisor watches its file and runs the worker on a change.
    assert paths.tls_keys_dir / tlskeys.REQUEST in worker.watched_files(settings, paths)["keeper"]

    tlskeys.request_rollover(paths)
    for minute in range(2, 5):
        task.step(NOW + timedelta(minutes=minute))
    assert served_tlsa(paths) == keys.current and len(ca.orders) == 1
    assert tlskeys.ensure_keys(paths) == keys
    assert caplog.text.count(f"waiting until {NAME} TLSA {keys.next} is served by the DNS") == 1

    data[(NAME, "TLSA")] = Answer((keys.current, "3 1 1 " + keys.next.split()[-1].upper()))
    task.step(NOW + timedelta(minutes=5))  # served: the switch waits the record's TTL
    assert tlskeys.ensure_keys(paths) == keys and served_tlsa(paths) == keys.current
    assert (f"{NAME} TLSA {keys.next} is served and matches the next key; the switch happens "
            "at 2026-11-25 13:05:00 UTC (once the record's TTL of 3600 s has passed)"
            in caplog.text)  # no TTL in the answer: the TTL we print
    task.step(NOW + timedelta(minutes=65))
    after = tlskeys.ensure_keys(paths)
    assert after.current == keys.next and after.next not in (keys.current, keys.next)
    assert served_tlsa(paths) == keys.next and len(ca.orders) == 2
    assert f"Publish the record of the new next key now: {NAME} TLSA {after.next}" in caplog.text
    assert f"remove {NAME} TLSA {keys.current} now" in caplog.text
    assert tlskeys.requested(paths) is None and tlskeys.retiring(paths) is None
    assert len(list((paths.tls_keys_dir / "retired").iterdir())) == 1


def test_the_switch_waits_the_served_records_ttl_as_a_dkim_rotation_does(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    """Senders' resolvers may hold the TLSA set without the next key's record for its TTL: a
    switch at first sight would have them refuse our new certificate meanwhile."""
    caplog.set_level(logging.INFO)
    paths = Paths(settings.data_dir)
    ca = KeptKeyCa(paths)
    keys = tlskeys.ensure_keys(paths)
    data = {**SIGNED, (NAME, "TLSA"): Answer((keys.current,), ttl=3600)}
    task, _ = make_rollover(settings, data, ca)
    task.step(NOW)
    tlskeys.request_rollover(paths)
    t0 = NOW + timedelta(minutes=10)
    data[(NAME, "TLSA")] = Answer((keys.current, keys.next), ttl=3600)
    wake = task.step(t0)
    assert wake == t0 + timedelta(seconds=settings.dns_check_interval)  # looks again meanwhile
    assert caplog.text.count("the switch happens at 2026-11-25 13:10:00 UTC (once the "
                             "record's TTL of 3600 s has passed)") == 1
    assert task.step(t0 + timedelta(minutes=59, seconds=59)) == t0 + timedelta(minutes=60)
    # A restart (the run directory, and the worker's memory with it, gone) resumes the wait:
    # the record was first seen at t0, as DATA_DIR/tls/keys says; the line is said again.
    task, _ = make_rollover(settings, data, ca)
    task.step(t0 + timedelta(minutes=59))
    assert tlskeys.ensure_keys(paths) == keys and served_tlsa(paths) == keys.current
    assert caplog.text.count("the switch happens at 2026-11-25 13:10:00 UTC") == 2
    task.step(t0 + timedelta(minutes=60))
    assert tlskeys.ensure_keys(paths).current == keys.next and served_tlsa(paths) == keys.next
    assert not (paths.tls_keys_dir / tlskeys.SEEN).exists()


def test_a_record_that_changes_while_waited_for_starts_the_wait_over(
    settings: Settings, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    paths = Paths(settings.data_dir)
    ca = KeptKeyCa(paths)
    keys = tlskeys.ensure_keys(paths)
    data = {**SIGNED, (NAME, "TLSA"): Answer((keys.current, keys.next), ttl=3600)}
    task, _ = make_rollover(settings, data, ca)
    task.step(NOW)  # no request yet: nothing seen, nothing kept
    assert tlskeys.rollover_seen(paths) is None
    tlskeys.request_rollover(paths)
    t0 = NOW + timedelta(minutes=1)
    task.step(t0)
    assert tlskeys.rollover_seen(paths) == (keys.next, t0)
    # Half way, the record changes (a typo in the hex, say): what senders may cache changes too.
    wrong = keys.next[:-4] + "0000"
    data[(NAME, "TLSA")] = Answer((keys.current, wrong), ttl=3600)
    task.step(t0 + timedelta(minutes=30))
    assert tlskeys.rollover_seen(paths) is None
    assert f"waiting until {NAME} TLSA {keys.next} is served by the DNS" in caplog.text
    # A failed lookup meanwhile neither switches nor forgets.
    data[(NAME, "TLSA")] = Answer((keys.current, keys.next), ttl=3600)
    again = t0 + timedelta(minutes=40)
    task.step(again)
    data[(NAME, "TLSA")] = Answer(error="timed out")
    task.step(again + timedelta(minutes=30))
    assert tlskeys.rollover_seen(paths) == (keys.next, again)
    data[(NAME, "TLSA")] = Answer((keys.current, keys.next), ttl=3600)
    task.step(t0 + timedelta(minutes=60))  # an hour after the first sight: too early now
    task.step(again + timedelta(minutes=59))
    assert tlskeys.ensure_keys(paths) == keys and served_tlsa(paths) == keys.current
    task.step(again + timedelta(minutes=60))
    assert tlskeys.ensure_keys(paths).current == keys.next and served_tlsa(paths) == keys.next


def test_a_restart_in_the_middle_of_a_switch_finishes_it(settings: Settings) -> None:
    paths = Paths(settings.data_dir)
    keys = tlskeys.ensure_keys(paths)
    tlskeys.request_rollover(paths)
    # Killed right after the key moved: the request is still there, next.pem is gone.
    (paths.tls_keys_dir / "current.pem").unlink()
    (paths.tls_keys_dir / "next.pem").rename(paths.tls_keys_dir / "current.pem")
    ca = KeptKeyCa(paths)
    task, _ = make_rollover(settings, {}, ca)  # the lookup is not even needed now
    task.step(NOW)
    after = tlskeys.ensure_keys(paths)
    assert after.current == keys.next and tlskeys.requested(paths) is None
    assert served_tlsa(paths) == keys.next


def test_without_a_request_nothing_rolls_over(settings: Settings) -> None:
    paths = Paths(settings.data_dir)
    ca = KeptKeyCa(paths)
    keys = tlskeys.ensure_keys(paths)
    task, _ = make_rollover(settings, {**SIGNED, (NAME, "TLSA"): Answer((keys.next,))}, ca)
    for hour in range(3):
        task.step(NOW + timedelta(hours=hour))
    assert tlskeys.ensure_keys(paths) == keys and len(ca.orders) == 1
    assert tlsa_name("mail.example.com") == NAME


def test_the_boot_uses_what_was_learnt_before_and_asks_only_without_it(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(MAIL_DOMAINS="example.com")
    paths = Paths(settings.data_dir)
    asked: list[tuple[str, str]] = []
    assert TlsaSource(settings, paths, lookup_from(SIGNED, asked), budget=1.0)() is not None
    assert asked  # nothing known yet: the boot asked, within its budget
    asked.clear()
    assert TlsaSource(settings, paths, lookup_from({}, asked), budget=1.0)() is not None
    assert asked == []  # a restart prints the records without asking
    assert TlsaSource(settings, paths, lookup_from({}, asked))() is None  # the worker asks
    assert TlsaSource(settings, paths, lookup_from({}, asked), budget=1.0)() is None
