"""DKIM rotation and Ed25519: a key signs only once its record is served; the state survives a
restart; replaced keys are retired after the grace period; imports are checked first."""

from __future__ import annotations

import base64
import io
import json
import logging
import signal
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from mailboot import render
from mailboot.base.errors import ConfigError, KeyImportError, StateError
from mailboot.base.paths import Paths
from mailboot.cli import dkim as cli_dkim
from mailboot.cli.main import main
from mailboot.dkim import keys as dkim
from mailboot.dkim import state as dkimstate
from mailboot.dkim.keys import DkimKey
from mailboot.dkim.state import Role
from mailboot.dns.answer import Answer
from mailboot.records.build import dkim_records
from mailboot.rotation import dkim as dkimrotation
from mailboot.rotation.dkim import DkimRotation
from mailboot.settings.table import Settings
from tests.conftest import NOW, snapshot

DOMAIN = "example.com"
GRACE = timedelta(days=7)
POLL = timedelta(seconds=30)


class Zone:
    """Authoritative answers as data: name -> TXT values (absent: no such record)."""

    def __init__(self) -> None:
        self.txt: dict[str, tuple[str, ...]] = {}
        self.ttl = 300
        self.broken = False

    def publish(self, key: DkimKey, value: str | None = None) -> None:
        self.txt[key.record_name] = (value or key.record_value,)

    def __call__(self, name: str, rtype: str) -> Answer:
        if self.broken:
            return Answer(error="timed out")
        values = self.txt.get(name.rstrip("."), ()) if rtype == "TXT" else ()
        return Answer(values, ttl=self.ttl if values else None)


class Applied:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def keys_of(data_dir: Path, algorithms: tuple[str, ...] = ("rsa",),
            now: datetime = NOW) -> dkim.DomainKeys:
    (domain_keys,) = dkim.ensure_keys(Paths(data_dir), [DOMAIN], now, algorithms)
    return domain_keys


def rotation(data_dir: Path, zone: Zone, applied: Applied,
             algorithms: tuple[str, ...] = ("rsa",)) -> DkimRotation:
    return DkimRotation(Paths(data_dir), [DOMAIN], algorithms, zone, POLL, GRACE, applied)


# --- Ed25519 ------------------------------------------------------------------------------------


def test_ed25519_adds_a_second_key_and_both_sign_from_the_start(data_dir: Path) -> None:
    keys = keys_of(data_dir, ("rsa", "ed25519"))
    assert [(k.selector, k.algorithm) for k in keys.signers] == [
        ("mb20261125", "rsa"), ("mb20261125e", "ed25519")]
    ed = keys.signers[1]
    assert ed.path.stat().st_mode & 0o777 == 0o600
    private = serialization.load_pem_private_key(ed.path.read_bytes(), password=None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    # RFC 8463 §4: p= is the raw 32-byte public key, base64.
    assert len(base64.b64decode(ed.public_key_b64)) == 32
    assert ed.record_value == f"v=DKIM1; k=ed25519; t=s; p={ed.public_key_b64}"
    records = dkim_records(keys)
    assert [r.required for r in records] == [True, True]
    assert not (data_dir / "dkim" / DOMAIN / "state.json").exists()  # the default rule holds
    tables = {f.template: f.content.decode() for f in render.render_dkim_tables([keys],
                                                                             Paths(data_dir))}
    # Two OpenDKIM instances: this OpenDKIM signs with one algorithm each (daemons/opendkim).
    assert f"*@{DOMAIN} mb20261125._domainkey.{DOMAIN}\n" in tables["opendkim/SigningTable"]
    assert "mb20261125e" not in tables["opendkim/SigningTable"]
    assert f"*@{DOMAIN} mb20261125e._domainkey.{DOMAIN}\n" in (
        tables["opendkim/ed25519/SigningTable"])


def test_ed25519_turned_on_later_waits_for_its_record(data_dir: Path) -> None:
    first = keys_of(data_dir)
    later = keys_of(data_dir, ("rsa", "ed25519"), NOW + timedelta(days=3))
    assert later.signers == first.signers
    (added,) = [k for k in later.keys if k.algorithm == "ed25519"]
    assert added.selector == "mb20261128e"
    assert later.role(added) is Role.NEXT
    zone, applied = Zone(), Applied()
    task = rotation(data_dir, zone, applied, ("rsa", "ed25519"))
    task.step(NOW)
    assert applied.count == 0
    zone.publish(added)
    task.step(NOW + POLL)
    assert task.step(NOW + POLL + timedelta(seconds=zone.ttl)) == NOW + POLL + timedelta(
        seconds=zone.ttl) + dkimrotation.IDLE_POLL
    assert applied.count == 1
    assert [k.selector for k in keys_of(data_dir, ("rsa", "ed25519")).signers] == [
        "mb20261125", "mb20261128e"]


# --- rotation -----------------------------------------------------------------------------------


def test_rotation_switches_only_after_the_record_is_served_for_its_ttl(
        data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    old = keys_of(data_dir).signing
    day = NOW + timedelta(days=30)
    (new,) = dkimrotation.start_rotation(Paths(data_dir), DOMAIN, ("rsa",), day)
    assert new.selector == "mb20261225"
    assert dkimrotation.start_rotation(Paths(data_dir), DOMAIN, ("rsa",), day) == (new,)
    keys = keys_of(data_dir)
    assert keys.signing == old and keys.role(new) is Role.NEXT
    assert [(r.name, r.required) for r in dkim_records(keys)] == [
        (old.record_name, True), (new.record_name, False)]

    zone, applied = Zone(), Applied()
    task = rotation(data_dir, zone, applied)
    task.step(day)  # not published: the old key keeps signing
    assert "waits for its record" in caplog.text and applied.count == 0
    zone.publish(new, "v=DKIM1; k=rsa; p=AAAA")  # wrong
    task.step(day + POLL)
    assert applied.count == 0 and keys_of(data_dir).signing == old
    zone.publish(new)
    seen = day + 2 * POLL
    task.step(seen)  # seen; waits its TTL (300 s)
    assert keys_of(data_dir).signing == old
    # A restart between seeing and switching resumes: the time first seen is kept.
    task = rotation(data_dir, zone, applied)
    task.step(seen + timedelta(seconds=299))
    assert applied.count == 0
    task = rotation(data_dir, zone, applied)
    task.step(seen + timedelta(seconds=300))
    assert applied.count == 1
    keys = keys_of(data_dir)
    assert keys.signing == new and keys.role(old) is Role.PREVIOUS
    assert "mb20261225 (rsa) signs now instead of mb20261125" in caplog.text
    assert f"Keep the old record {old.record_name} TXT published" in caplog.text
    assert [r.name for r in dkim_records(keys)] == [old.record_name, new.record_name]

    # After the grace period, the old key is retired and the log says which record to remove.
    switched = seen + timedelta(seconds=300)
    task = rotation(data_dir, zone, applied)
    task.step(switched + GRACE - timedelta(seconds=1))
    assert old.path.exists()
    task.step(switched + GRACE)
    assert not old.path.exists()
    assert (old.path.parent / "retired" / old.path.name).exists()
    assert f"remove its record now: {old.record_name} TXT" in caplog.text
    keys = keys_of(data_dir)
    assert [k.selector for k in keys.keys] == ["mb20261225"]
    assert [r.name for r in dkim_records(keys)] == [new.record_name]
    assert applied.count == 1  # retiring changes no signing key


def test_unanswered_lookup_neither_switches_nor_forgets(data_dir: Path) -> None:
    keys_of(data_dir)
    (new,) = dkimrotation.start_rotation(Paths(data_dir), DOMAIN, ("rsa",), NOW)
    zone, applied = Zone(), Applied()
    zone.publish(new)
    task = rotation(data_dir, zone, applied)
    task.step(NOW)
    zone.broken = True
    task.step(NOW + timedelta(hours=1))
    assert applied.count == 0
    zone.broken = False
    task.step(NOW + timedelta(hours=2))
    assert applied.count == 1  # seen since NOW, long past the TTL


def test_stepped_early_returns_its_own_time(data_dir: Path) -> None:
    keys_of(data_dir)
    task = rotation(data_dir, Zone(), Applied())
    due = task.step(NOW)
    assert task.step(NOW + timedelta(seconds=1)) == due


def test_state_file_is_readable_json_and_a_broken_one_is_a_clear_error(data_dir: Path) -> None:
    keys_of(data_dir)
    dkimrotation.start_rotation(Paths(data_dir), DOMAIN, ("rsa",), NOW + timedelta(days=1))
    path = data_dir / "dkim" / DOMAIN / "state.json"
    assert json.loads(path.read_text())["rsa"]["next"] == "mb20261126"
    path.write_text("{not json")
    with pytest.raises(StateError, match="not a DKIM state file"):
        keys_of(data_dir)


def test_rotation_of_both_algorithms(data_dir: Path) -> None:
    keys_of(data_dir, ("rsa", "ed25519"))
    new = dkimrotation.start_rotation(Paths(data_dir), DOMAIN, ("rsa", "ed25519"),
                                      NOW + timedelta(days=1))
    assert [k.selector for k in new] == ["mb20261126", "mb20261126e"]
    same_day = dkim.selector_for(NOW, "rsa", {"mb20261125", "mb20261125-2"})
    assert same_day == "mb20261125-3"


# --- import ---------------------------------------------------------------------------------------


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def test_imported_key_waits_for_its_record(data_dir: Path) -> None:
    old = keys_of(data_dir).signing
    key = dkimrotation.import_key(Paths(data_dir), DOMAIN, "default",
                                  dkim.generate_private_key_pem(), ("rsa",))
    assert key.selector == "default" and key.path.stat().st_mode & 0o777 == 0o600
    keys = keys_of(data_dir)
    assert keys.signing == old and keys.role(key) is Role.NEXT


@pytest.mark.parametrize("pem", [b"", b"garbage", _pem(ec.generate_private_key(ec.SECP256R1()))],
                         ids=["empty", "garbage", "an EC key"])  # one id in every xdist process
def test_unusable_import_changes_nothing(data_dir: Path, pem: bytes) -> None:
    keys_of(data_dir)
    before = snapshot(data_dir)
    with pytest.raises(KeyImportError) as caught:
        dkimrotation.import_key(Paths(data_dir), DOMAIN, "default", pem, ("rsa",))
    assert caught.value.exit_code == 65
    assert snapshot(data_dir) == before


def test_ed25519_import_needs_the_algorithm_and_a_free_selector(data_dir: Path) -> None:
    keys_of(data_dir)
    pem = _pem(ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(KeyImportError, match="DKIM_ALGORITHMS"):
        dkimrotation.import_key(Paths(data_dir), DOMAIN, "ed", pem, ("rsa",))
    with pytest.raises(KeyImportError, match="already has"):
        dkimrotation.import_key(Paths(data_dir), DOMAIN, "mb20261125", pem, ("rsa", "ed25519"))


# --- the command line -----------------------------------------------------------------------------


def test_cli_rotate_prints_the_records_and_import_refuses_bad_keys(
        data_dir: Path, make_settings: Callable[..., Settings],
        monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"MAIL_DOMAINS": DOMAIN, "DATA_DIR": str(data_dir),
               "DKIM_ALGORITHMS": "rsa,ed25519"}
    keys_of(data_dir, ("rsa", "ed25519"))
    out = io.StringIO()
    assert main(["dkim", "rotate", "--domain", DOMAIN], environ=environ, stdout=out) == 0
    lines = [line for line in out.getvalue().splitlines() if not line.startswith(";")]
    assert len(lines) == 2
    assert "._domainkey.example.com." in lines[0] and '"v=DKIM1; k=rsa;' in lines[0]
    assert '"v=DKIM1; k=ed25519; t=s; p=' in lines[1]
    before = snapshot(data_dir)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"not a key")))
    assert main(["dkim", "import", "--domain", DOMAIN, "--selector", "old"],
                environ=environ, stdout=io.StringIO()) == 65
    assert snapshot(data_dir) == before
    lines_ = cli_dkim.key_lines(make_settings(MAIL_DOMAINS=DOMAIN,
                                              DKIM_ALGORITHMS="rsa,ed25519"),
                                Paths(data_dir), Zone())
    assert [(line.key.selector, line.role, line.record) for line in lines_] == [
        ("mb20261125", "signing", "MISSING"), ("mb20261125e", "signing", "MISSING"),
        (lines_[2].key.selector, "next", "MISSING"), (lines_[3].key.selector, "next", "MISSING")]
    assert lines_[0].as_json()["signs"] is True


def test_settings_for_algorithms_and_grace(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(MAIL_DOMAINS=DOMAIN)
    assert settings.dkim_algorithms == ("rsa",)
    assert settings.dkim_rotation_grace == 7 * 86400
    assert make_settings(MAIL_DOMAINS=DOMAIN,
                         DKIM_ALGORITHMS="ED25519, rsa").dkim_algorithms == ("rsa", "ed25519")
    for bad in ("ed25519", "rsa,dsa"):
        with pytest.raises(ConfigError):
            make_settings(MAIL_DOMAINS=DOMAIN, DKIM_ALGORITHMS=bad)


def test_reconcile_drops_missing_files_and_never_lets_an_unknown_key_sign() -> None:
    state = dkimstate.DomainState((("rsa", dkimstate.Slot("a", "b", NOW)),), stored=True)
    present = {"rsa": ["a", "c"]}
    reconciled = dkimstate.reconcile(state, present)
    assert reconciled.slot("rsa") == dkimstate.Slot(
        "a", None, None, (dkimstate.Replaced("c", None),))
    assert reconciled.role("rsa", "c") is Role.PREVIOUS


def test_opendkim_reload_signals_only_opendkim(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from mailboot.daemons import opendkim

    for pid, program in (("10", opendkim.OPENDKIM), ("11", "/usr/sbin/postfix")):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(program.encode() + b"\0-f\0")
    (tmp_path / "self").mkdir()
    signalled: list[tuple[int, int]] = []
    monkeypatch.setattr("os.kill", lambda pid, signum: signalled.append((pid, signum)))
    opendkim.reload(Paths(tmp_path), proc=tmp_path)
    assert signalled == [(10, signal.SIGUSR1)]


def test_postfix_asks_the_ed25519_instance_only_when_ed25519_signs(
        make_settings: Callable[..., Settings], data_dir: Path) -> None:
    from mailboot.daemons import opendkim

    rsa_only = opendkim.context(make_settings(MAIL_DOMAINS=DOMAIN), Paths(data_dir))
    assert rsa_only["signing_milters"] == "inet:127.0.0.1:8891"
    both = opendkim.context(make_settings(MAIL_DOMAINS=DOMAIN, DKIM_ALGORITHMS="rsa,ed25519"),
                            Paths(data_dir))
    assert both["signing_milters"] == "inet:127.0.0.1:8891, inet:127.0.0.1:8892"
