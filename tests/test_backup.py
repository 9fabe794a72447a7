"""Backup and restore: what the archive holds, the round trip, and every refusal."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import tarfile
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import pytest

from mailboot.backup import archive, restore
from mailboot.backup import take as backup
from mailboot.base.errors import ArchiveError, StateError
from mailboot.base.files import TEMP_MARK
from mailboot.cli import main as cli

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
MAILDIR = Path("mail/example.com/alice/Maildir")
QUEUE = Path("spool/postfix")


def write(root: Path, relative: str | Path, content: bytes, mode: int = 0o644) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.chmod(mode)
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A DATA_DIR like a running server's, with what a backup must keep and must leave out."""
    root = tmp_path / "data"
    write(root, "dkim/example.com/mb202612.key", b"PRIVATE KEY", 0o600)
    write(root, "tls/live-1/key.pem", b"TLS KEY", 0o600)
    write(root, "tls/live-1/fullchain.pem", b"CHAIN")
    (root / "tls/live").symlink_to("live-1")
    write(root, "accounts/passwd", b"alice@example.com:{BLF-CRYPT}x\n", 0o640)
    write(root, "accounts/.passwd.tmp-0a1b2c3d", b"half a write")  # an atomic write in flight
    write(root, MAILDIR / "new/1.M1.mail", b"Subject: one\r\n\r\nnew\r\n")
    write(root, MAILDIR / "cur/2.M2.mail:2,S", b"Subject: two\r\n\r\nseen\r\n")
    write(root, MAILDIR / ".Junk/cur/3.M3.mail:2,", b"Subject: three\r\n\r\njunk\r\n")
    write(root, MAILDIR / "tmp/4.M4.mail", b"being delivered")
    write(root, MAILDIR / "dovecot-uidlist", b"3 V1 N4\n1 1.M1.mail\n")
    write(root, MAILDIR / "dovecot.index.log", b"torn index")
    write(root, QUEUE / "deferred/A/A1B2C3", b"queued message", 0o700)
    write(root, QUEUE / "defer/A/A1B2C3", b"reason=unreachable\n", 0o600)
    write(root, QUEUE / "incoming/D4E5F6", b"still being written", 0o600)
    write(root, QUEUE / "pid/master.pid", b"     42\n")
    (root / QUEUE / "public").mkdir(mode=0o710)
    write(root, "postfix/postscreen_cache.db", b"btree")
    words = root / "mail/example.com/alice/.bogofilter/wordlist.db"
    words.parent.mkdir(parents=True)
    with sqlite3.connect(words) as database:
        database.execute("CREATE TABLE bogofilter (key BLOB, value BLOB)")
        database.execute("INSERT INTO bogofilter VALUES ('viagra', 'spam')")
    database.close()
    write(root, "found-addresses.json", b"{}")
    if os.geteuid() == 0:
        os.chown(root / MAILDIR / "new/1.M1.mail", 5000, 5000)
    return root


def take(data: Path, **options: object) -> bytes:
    stream = io.BytesIO()
    backup.take_backup(data, stream, NOW, **options)  # type: ignore[arg-type]
    return stream.getvalue()


def tree(root: Path) -> dict[str, tuple[str, int, bytes | str]]:
    """Every entry below `root`: kind, mode, and content (file) or target (symlink)."""
    found: dict[str, tuple[str, int, bytes | str]] = {}
    for path in sorted(root.rglob("*")):
        status = path.lstat()
        name = str(path.relative_to(root))
        if stat.S_ISLNK(status.st_mode):
            found[name] = ("symlink", 0, str(path.readlink()))
        elif stat.S_ISDIR(status.st_mode):
            found[name] = ("dir", status.st_mode & 0o7777, b"")
        else:
            found[name] = ("file", status.st_mode & 0o7777, path.read_bytes())
    return found


LEFT_OUT = {"accounts/.passwd.tmp-0a1b2c3d", f"{MAILDIR}/tmp/4.M4.mail",
            f"{MAILDIR}/dovecot.index.log", f"{QUEUE}/incoming/D4E5F6",
            f"{QUEUE}/pid/master.pid", "postfix/postscreen_cache.db"}


def test_round_trip_keeps_everything_but_what_the_daemons_rebuild(data: Path,
                                                                   tmp_path: Path) -> None:
    target = tmp_path / "new"
    restore.restore(io.BytesIO(take(data)), target, force=False, proc=tmp_path)
    before, after = tree(data), tree(target)
    words = "mail/example.com/alice/.bogofilter/wordlist.db"
    assert set(after) == set(before) - LEFT_OUT
    assert {name: entry for name, entry in after.items() if name != words} == \
        {name: entry for name, entry in before.items() if name not in LEFT_OUT | {words}}
    with sqlite3.connect(target / words) as database:  # copied with SQLite's backup
        assert database.execute("SELECT * FROM bogofilter").fetchall() == [("viagra", "spam")]
    database.close()
    assert (target / "tls/live").resolve() == target / "tls/live-1"
    if os.geteuid() == 0:
        assert (target / MAILDIR / "new/1.M1.mail").stat().st_uid == 5000
    assert not list(target.glob(".*tmp-*"))  # the staging directory is gone


def test_the_manifest_comes_last_and_describes_every_member(data: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(take(data))) as tar:
        members = tar.getmembers()
        assert members[-1].name == archive.MANIFEST_NAME
        reader = tar.extractfile(members[-1])
        assert reader is not None
        document = json.loads(reader.read())
        assert document["format"] == "mailboot-backup" and document["version"] == 1
        assert document["created"] == "2026-12-01T12:00:00Z"
        entries = {entry["path"]: entry for entry in document["entries"]}
        assert {m.name.removeprefix("data/") for m in members[:-1]} == set(entries)
        key = entries["dkim/example.com/mb202612.key"]
        assert key["kind"] == "file" and key["mode"] == 0o600 and key["size"] == 11
        assert key["sha256"] == hashlib.sha256(b"PRIVATE KEY").hexdigest()
        assert entries["tls/live"]["target"] == "live-1"


@pytest.mark.parametrize("cut", ["half", "inside the manifest", "before the manifest"])
def test_a_truncated_archive_is_refused_and_the_target_stays_empty(
        data: Path, tmp_path: Path, cut: str) -> None:
    whole = take(data)
    manifest_at = whole.index(archive.MANIFEST_NAME.encode())
    end = {"half": len(whole) // 2, "inside the manifest": manifest_at + 700,
           "before the manifest": manifest_at - 1}[cut]
    target = tmp_path / "new"
    target.mkdir()
    with pytest.raises(ArchiveError, match="truncated"):
        restore.restore(io.BytesIO(whole[:end]), target, force=False, proc=tmp_path)
    assert list(target.iterdir()) == []


def test_a_changed_byte_is_refused_by_its_checksum(data: Path, tmp_path: Path) -> None:
    damaged = take(data).replace(b"Subject: two", b"Subject: tw0")
    target = tmp_path / "new"
    with pytest.raises(ArchiveError, match=r"cur/2\.M2\.mail:2,S.*checksum"):
        restore.restore(io.BytesIO(damaged), target, force=False, proc=tmp_path)
    assert list(target.iterdir()) == []


def test_something_that_is_not_an_archive_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="truncated or damaged"):
        restore.restore(io.BytesIO(b"hello" * 1000), tmp_path / "new", force=False,
                        proc=tmp_path)
    with pytest.raises(ArchiveError):
        restore.restore(io.BytesIO(b""), tmp_path / "new", force=False, proc=tmp_path)


def crafted(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        for info, content in members:
            info.size = len(content) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(content) if info.isfile() else None)
    stream.seek(0)
    return stream


def test_members_that_would_land_outside_data_dir_are_refused(tmp_path: Path) -> None:
    outside = tarfile.TarInfo("data/../escape")
    with pytest.raises(ArchiveError, match="not below data/"):
        restore.restore(crafted((outside, b"x")), tmp_path / "a", force=False, proc=tmp_path)
    link = tarfile.TarInfo("data/etc")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    through = tarfile.TarInfo("data/etc/passwd")
    with pytest.raises(ArchiveError, match="points outside"):
        restore.restore(crafted((link, b""), (through, b"x")), tmp_path / "b", force=False,
                        proc=tmp_path)
    orphan = tarfile.TarInfo("data/nowhere/file")
    with pytest.raises(ArchiveError, match="before \\(or without\\) its directory"):
        restore.restore(crafted((orphan, b"x")), tmp_path / "c", force=False, proc=tmp_path)
    assert not (tmp_path / "escape").exists()


def test_a_non_empty_data_dir_is_refused_unless_forced(data: Path, tmp_path: Path) -> None:
    archived = take(data)
    target = tmp_path / "new"
    write(target, "mail/other/message", b"keep me")
    with pytest.raises(StateError, match=r"not empty.*--force"):
        restore.restore(io.BytesIO(archived), target, force=False, proc=tmp_path)
    assert tree(target)["mail/other/message"][2] == b"keep me"
    with pytest.raises(ArchiveError):  # forced, but damaged: what is there stays
        restore.restore(io.BytesIO(archived[:5000]), target, force=True, proc=tmp_path)
    assert tree(target)["mail/other/message"][2] == b"keep me"
    restore.restore(io.BytesIO(archived), target, force=True, proc=tmp_path)
    assert not (target / "mail/other").exists()
    assert (target / "dkim/example.com/mb202612.key").read_bytes() == b"PRIVATE KEY"
    assert sorted(p.name for p in target.iterdir() if p.name.startswith(".")) == []


def test_lost_found_alone_counts_as_empty(data: Path, tmp_path: Path) -> None:
    target = tmp_path / "new"
    (target / "lost+found").mkdir(parents=True)
    restore.restore(io.BytesIO(take(data)), target, force=False, proc=tmp_path)
    assert (target / "accounts/passwd").exists()


def test_refused_while_the_mail_daemons_run(data: Path, tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    write(proc, "1/comm", b"tini\n")
    write(proc, "57/comm", b"master\n")
    target = tmp_path / "new"
    with pytest.raises(StateError, match=r"running here \(master\)"):
        restore.restore(io.BytesIO(take(data)), target, force=True, proc=proc)
    assert not target.exists()


def test_a_message_renamed_or_added_during_the_backup_is_captured_once(data: Path,
                                                                       tmp_path: Path) -> None:
    def meanwhile(number: int) -> None:
        if number == 1:  # Dovecot moves a message new -> cur, and one more arrives
            (data / MAILDIR / "new/1.M1.mail").rename(data / MAILDIR / "cur/1.M1.mail:2,")
            write(data, MAILDIR / "new/5.M5.mail", b"Subject: five\r\n\r\nlate\r\n")

    archived = take(data, after_pass=meanwhile)
    target = tmp_path / "new"
    restore.restore(io.BytesIO(archived), target, force=False, proc=tmp_path)
    names = sorted(p.name for p in (target / MAILDIR).glob("*/*.mail*"))
    assert names == ["1.M1.mail", "2.M2.mail:2,S", "5.M5.mail"]


def test_capture_keys_follow_messages_across_renames() -> None:
    def key(path: str) -> tuple[str, ...] | None:
        return backup.capture_key(PurePosixPath(path))

    assert key(f"{MAILDIR}/new/1.M1.host") == key(f"{MAILDIR}/cur/1.M1.host:2,S")
    assert key(f"{QUEUE}/active/ABC") == key(f"{QUEUE}/deferred/A/ABC")
    assert key(f"{QUEUE}/defer/A/ABC") != key(f"{QUEUE}/deferred/A/ABC")
    assert key(f"{QUEUE}/private/smtp") is None


def test_the_cli_writes_a_file_and_restores_it(data: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    # This machine may run mail servers in containers: their processes are in our /proc.
    monkeypatch.setattr(restore, "running_daemons", lambda _proc: [])
    file = tmp_path / "backup.tar"
    assert cli.main(["backup", str(file)], environ={"DATA_DIR": str(data)}) == 0
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    assert re.search(r"backup: \d+ entries, \d+ files, [\d.]+ KiB of ", capsys.readouterr().err)
    assert not [path for path in tmp_path.iterdir() if TEMP_MARK in path.name]
    inside = data / "backup.tar"
    assert cli.main(["backup", str(inside)], environ={"DATA_DIR": str(data)}) == 64
    assert "inside DATA_DIR" in capsys.readouterr().err
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(file.read_bytes()[:4096])
    target = tmp_path / "new"
    assert cli.main(["restore", str(truncated)], environ={"DATA_DIR": str(target)}) == 65
    assert "truncated" in capsys.readouterr().err
    assert list(target.iterdir()) == []
    assert cli.main(["restore", str(file)], environ={"DATA_DIR": str(target)}) == 0
    assert (target / "accounts/passwd").exists()
    assert re.search(r"of a backup taken \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, into ",
                     capsys.readouterr().err)


def test_postfix_in_another_container_is_seen_by_its_lock(tmp_path: Path) -> None:
    lock = write(tmp_path, restore.MASTER_LOCK, b"     42\n")
    with lock.open() as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as Postfix's master holds it while it runs
        assert restore.postfix_holds_lock(lock)
        with pytest.raises(StateError, match="another container"):
            restore.restore(io.BytesIO(b""), tmp_path, force=True, proc=tmp_path / "proc")
    assert not restore.postfix_holds_lock(lock)
    assert not restore.postfix_holds_lock(tmp_path / "missing")


def test_a_message_renamed_between_listing_and_copy_is_found_under_its_new_name(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = backup._copy
    flags = iter([":2,RS", ":2,", ":2,S"])  # a client flipping flags: three renames

    def renamed_first(data_dir: Path, relative: PurePosixPath, *rest: object) -> str:
        if relative.name.startswith("2.M2.mail") and (name := next(flags, None)):
            current = next((data / MAILDIR / "cur").glob("2.M2.mail*"))
            current.rename(current.with_name("2.M2.mail" + name))
        return copy(data_dir, relative, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(backup, "_copy", renamed_first)
    target = tmp_path / "new"
    restore.restore(io.BytesIO(take(data, passes=1)), target, force=False, proc=tmp_path)
    assert [p.name for p in (target / MAILDIR / "cur").iterdir()] == ["2.M2.mail:2,S"]
