"""The backup archive: a tar stream of DATA_DIR's entries, then a manifest of every one of them.

Members are `data/<path below DATA_DIR>`, each directory before what it holds, and `MANIFEST.json`
comes last, so a backup is written as one stream (`mailboot backup -`). The manifest lists each
entry's type, mode, numeric owner and, for a file, its size and SHA-256. A restore unpacks into a
staging directory and compares every member with the manifest before anything goes into place:
a truncated archive (it ends before its manifest) or a damaged one (a size or checksum differs)
is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any

from mailboot.base.errors import ArchiveError, StateError
from mailboot.base.formats import machine_time

FORMAT = "mailboot-backup"
VERSION = 1
MANIFEST_NAME = "MANIFEST.json"
DATA_PREFIX = "data/"
CHUNK = 1 << 20
# A manifest line is ~250 bytes: 64 MiB is a few hundred thousand files, and bounds the memory
# a hostile archive can make us spend on it.
MANIFEST_LIMIT = 64 << 20
KINDS = ("dir", "file", "symlink")


@dataclass(frozen=True)
class Entry:
    """One thing below DATA_DIR, as the archive holds it."""

    path: str  # relative to DATA_DIR, POSIX form
    kind: str  # one of KINDS
    mode: int  # permission bits (07777)
    uid: int
    gid: int
    mtime: int
    size: int = 0
    sha256: str = ""
    target: str = ""  # a symlink's target

    @classmethod
    def from_json(cls, item: Any) -> Entry:
        """Raises ArchiveError when `item` is not an entry this version writes."""
        try:
            entry = cls(**item)
            valid = (entry.kind in KINDS and all(isinstance(getattr(entry, name), int) for name in
                                                  ("mode", "uid", "gid", "mtime", "size"))
                     and all(isinstance(getattr(entry, name), str) for name in
                             ("path", "sha256", "target")))
        except TypeError:
            valid = False
        if not valid:
            raise ArchiveError(f"the manifest holds an entry it can't: {str(item)[:200]}; the "
                               "archive is damaged or not a mailboot backup; nothing was restored")
        return entry


@dataclass(frozen=True)
class Manifest:
    created: str  # RFC 3339, UTC (base.formats.machine_time)
    entries: tuple[Entry, ...]

    @property
    def files(self) -> int:
        return sum(1 for entry in self.entries if entry.kind == "file")

    @property
    def size(self) -> int:
        return sum(entry.size for entry in self.entries)


def manifest_bytes(manifest: Manifest) -> bytes:
    """One entry per line, so it reads well in a pager (`tar -xOf b.tar MANIFEST.json`)."""
    lines = [json.dumps(asdict(entry), sort_keys=True) for entry in manifest.entries]
    head = json.dumps({"format": FORMAT, "version": VERSION, "created": manifest.created})
    return (head[:-1] + ', "entries": [\n' + ",\n".join(lines) + "\n]}\n").encode()


def parse_manifest(data: bytes) -> Manifest:
    """Raises ArchiveError unless `data` is a manifest this version of mailboot reads."""
    try:
        document = json.loads(data)
    except ValueError as error:
        raise ArchiveError(f"the archive's manifest is not JSON ({error}): the archive is damaged; "
                           "nothing was restored") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ArchiveError("the archive's manifest is not a mailboot backup's; nothing was "
                           "restored")
    if document.get("version") != VERSION:
        raise ArchiveError(f"the archive is format version {document.get('version')!r}, this "
                           f"mailboot reads version {VERSION}: restore with the mailboot image "
                           "that made it (or a newer one); nothing was restored")
    entries = document.get("entries")
    if not isinstance(entries, list):
        raise ArchiveError("the archive's manifest lists no entries: the archive is damaged; "
                           "nothing was restored")
    return Manifest(str(document.get("created", "")), tuple(map(Entry.from_json, entries)))


class ArchiveWriter:
    """Writes members to a tar stream as they come and keeps their entries for the manifest."""

    def __init__(self, stream: IO[bytes]) -> None:
        # Closed by finish(): the writer lives across the whole walk.
        self._tar = tarfile.open(fileobj=stream, mode="w|",  # noqa: SIM115
                                 format=tarfile.PAX_FORMAT)
        self._stream = stream
        self._entries: list[Entry] = []

    def add(self, entry: Entry, content: IO[bytes] | None = None) -> None:
        """Append one entry; a file's `content` must hold exactly entry.size bytes."""
        info = tarfile.TarInfo(DATA_PREFIX + entry.path)
        info.type = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE,
                     "symlink": tarfile.SYMTYPE}[entry.kind]
        info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, entry.mtime
        info.size, info.linkname = entry.size, entry.target
        self._write(info, content)
        self._entries.append(entry)

    def finish(self, created: datetime) -> Manifest:
        """Write the manifest last, end the tar stream and flush it (the caller closes it)."""
        manifest = Manifest(machine_time(created), tuple(self._entries))
        data = manifest_bytes(manifest)
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size, info.mode, info.mtime = len(data), 0o644, int(created.timestamp())
        self._write(info, _BytesReader(data))
        try:
            self._tar.close()
            self._stream.flush()
        except OSError as error:
            raise _write_error(error) from error
        return manifest

    def _write(self, info: tarfile.TarInfo, content: Any) -> None:
        try:
            self._tar.addfile(info, content)
        except OSError as error:
            raise _write_error(error) from error


def _write_error(error: OSError) -> StateError:
    return StateError(f"can't write the archive: {error.strerror or error} (a full disk, or the "
                      "command reading it stopped?); it is incomplete, and a restore refuses it")


class _BytesReader:
    """The smallest file object tarfile reads a member's data from."""

    def __init__(self, data: bytes) -> None:
        self._data, self._offset = data, 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._offset + size
        chunk = self._data[self._offset:end]
        self._offset += len(chunk)
        return chunk


def extract_verified(stream: IO[bytes], staging: Path) -> Manifest:
    """Unpack the archive below `staging` (an empty directory of ours) and check every member
    against the manifest. Nothing outside `staging` is touched; owners and modes are not applied
    yet (see apply_metadata). Raises ArchiveError when the archive is truncated or damaged."""
    seen: dict[str, Entry] = {}
    directories = {"."}
    manifest_data: bytes | None = None
    try:
        # r|*: an archive compressed on its way to storage (gzip, bzip2, xz) reads as well.
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if manifest_data is not None:
                    raise ArchiveError(f"the archive holds {member.name!r} after its manifest: "
                                       "it is damaged or not a mailboot backup; nothing was "
                                       "restored")
                if member.name == MANIFEST_NAME and member.isfile():
                    manifest_data = _read_manifest(tar, member)
                    continue
                entry = _unpack(tar, member, staging, directories)
                if entry.path in seen:
                    raise ArchiveError(f"the archive holds {entry.path!r} twice: it is damaged; "
                                       "nothing was restored")
                seen[entry.path] = entry
    except (tarfile.TarError, EOFError, zlib.error) as error:
        raise ArchiveError(f"the archive can't be read to its end ({error}): it is truncated "
                           "or damaged; nothing was restored") from None
    if manifest_data is None:
        raise ArchiveError("the archive ends before its manifest: it is truncated (or not a "
                           "mailboot backup); nothing was restored")
    manifest = parse_manifest(manifest_data)
    compare(manifest, seen)
    return manifest


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if member.size > MANIFEST_LIMIT:
        raise ArchiveError(f"the archive's manifest is {member.size} bytes, more than any "
                           "mailboot writes: it is damaged; nothing was restored")
    reader = tar.extractfile(member)
    data = reader.read() if reader is not None else b""
    if len(data) != member.size:
        raise ArchiveError("the archive ends inside its manifest: it is truncated; nothing was "
                           "restored")
    return data


def _unpack(tar: tarfile.TarFile, member: tarfile.TarInfo, staging: Path,
            directories: set[str]) -> Entry:
    """Create one member below `staging` (never through a symlink) and return what it is."""
    relative = member_path(member.name)
    if str(relative.parent) not in directories:
        raise ArchiveError(f"the archive holds {member.name!r} before (or without) its "
                           "directory: it is damaged or not a mailboot backup; nothing was "
                           "restored")
    target = staging / relative
    entry = Entry(path=str(relative), kind="dir", mode=member.mode & 0o7777, uid=member.uid,
                  gid=member.gid, mtime=int(member.mtime))
    if member.isdir():
        target.mkdir(mode=0o700)
        directories.add(str(relative))
        return entry
    if member.issym():
        link = PurePosixPath(member.linkname)
        if link.is_absolute() or ".." in link.parts or not member.linkname:
            raise ArchiveError(f"the archive's symlink {member.name!r} points outside its "
                               f"directory ({member.linkname!r}); nothing was restored")
        target.symlink_to(member.linkname)
        return replace(entry, kind="symlink", target=member.linkname)
    if not member.isfile():
        raise ArchiveError(f"the archive holds {member.name!r}, neither a file, a directory nor "
                           "a symlink: it is not a mailboot backup; nothing was restored")
    size, digest = _write_member(tar, member, target)
    if size != member.size:
        raise ArchiveError(f"the archive ends inside {member.name!r}: it is truncated; nothing "
                           "was restored")
    return replace(entry, kind="file", size=size, sha256=digest)


def member_path(name: str) -> PurePosixPath:
    """The path below DATA_DIR a member stands for; raises ArchiveError for anything that could
    land outside it."""
    relative = PurePosixPath(name.removeprefix(DATA_PREFIX))
    if (not name.startswith(DATA_PREFIX) or relative.is_absolute() or ".." in relative.parts
            or str(relative) in ("", ".")):
        raise ArchiveError(f"the archive holds {name!r}, which is not below data/: it is not a "
                           "mailboot backup; nothing was restored")
    return relative


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> tuple[int, str]:
    reader = tar.extractfile(member)
    digest, size = hashlib.sha256(), 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(target, flags, 0o600), "wb") as handle:
        while reader is not None and (chunk := reader.read(CHUNK)):
            digest.update(chunk)
            handle.write(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def compare(manifest: Manifest, seen: dict[str, Entry]) -> None:
    """Every entry of the manifest is in the archive, exactly as described, and nothing else is.
    Raises ArchiveError naming the first difference."""
    listed = {entry.path: entry for entry in manifest.entries}
    missing = sorted(set(listed) - set(seen))
    if missing:
        raise ArchiveError(f"the archive lacks {len(missing)} of the entries its manifest lists "
                           f"(first: {missing[0]!r}): it is damaged; nothing was restored")
    extra = sorted(set(seen) - set(listed))
    if extra:
        raise ArchiveError(f"the archive holds {extra[0]!r}, which its manifest doesn't list: "
                           "it is damaged; nothing was restored")
    for path, entry in listed.items():
        if seen[path] != entry:
            what = "checksum" if seen[path].sha256 != entry.sha256 else "size or attributes"
            raise ArchiveError(f"{path!r} in the archive differs from its manifest ({what}): "
                               "the archive is damaged; nothing was restored")


def apply_metadata(staging: Path, entries: Iterable[Entry], owners: bool) -> None:
    """Give every unpacked entry its mode, mtime and (as root: `owners`) its numeric owner.
    Deepest first, so a directory's mtime is set after what it holds, and a directory made
    unwritable is already filled."""
    for entry in sorted(entries, key=lambda e: len(PurePosixPath(e.path).parts), reverse=True):
        path = staging / entry.path
        if owners:
            os.chown(path, entry.uid, entry.gid, follow_symlinks=False)
        if entry.kind != "symlink":
            path.chmod(entry.mode)  # after chown, which clears set-id bits
        os.utime(path, (entry.mtime, entry.mtime), follow_symlinks=False)


def entry_for(path: str, status: os.stat_result, **more: Any) -> Entry:
    """The entry for something below DATA_DIR, from its lstat()."""
    kind = ("dir" if stat.S_ISDIR(status.st_mode) else
            "symlink" if stat.S_ISLNK(status.st_mode) else "file")
    return Entry(path=path, kind=kind, mode=status.st_mode & 0o7777, uid=status.st_uid,
                 gid=status.st_gid, mtime=int(status.st_mtime), **more)
