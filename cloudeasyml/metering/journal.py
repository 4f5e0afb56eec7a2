"""The usage journal: local files that every usage record is appended to before its answer is sent, so that a
process crash loses no billed request. The database writer reads the journal back, writes it in batches and
marks how far it got; what a dead process left is replayed by the next one to start.

Files in the journal directory, per process (``tag``: random, so a restarted container, whose process id is the
same, never mistakes a dead process's files for its own):

- ``usage-<tag>.lock``: locked (``fcntl.flock``) by its process for its whole life; the kernel drops the lock
  when the process dies, however it dies. Whoever locks another process's lock file owns its files from then on.
- ``usage-<tag>-<segment>.jsonl``: records, one JSON object a line, appended with one ``write`` each. A segment
  is closed past ``segment_bytes`` and deleted once the database has all of it.
- ``usage-<tag>.checkpoint``: ``<segment> <offset>``, the position up to which the database has every record.
  Replaying from an older position only writes records again, which the request id makes harmless.

A crash keeps what the kernel received (no ``fsync``): a machine that loses power may lose the last records, a
process killed at any moment loses none. A write cut short (disk full) is undone, so lines never interleave.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import secrets
from pathlib import Path
from typing import NamedTuple

from cloudeasyml.errors import UsageJournalError

__all__ = ("Journal", "Position", "orphan_tags")

log = logging.getLogger(__name__)

_SEGMENT = re.compile(r"usage-(?P<tag>[0-9a-f]{16})-(?P<segment>\d{8})\.jsonl")
_LOCK = re.compile(r"usage-(?P<tag>[0-9a-f]{16})\.lock")
_READ_CHUNK = 1 << 20


class Position(NamedTuple):
    """A place in a journal: a segment number and a byte offset in it."""

    segment: int
    offset: int


class Journal:
    """One process's journal files: appended to by their owner, read back and checkpointed by the database writer.

    Use ``Journal.create`` for this process's own journal and ``Journal.adopt`` for a dead process's.
    """

    def __init__(self, directory: Path, tag: str, lock_fd: int, *, segment_bytes: int, own: bool) -> None:
        self.directory = directory
        self.tag = tag
        self._lock_fd = lock_fd
        self._segment_bytes = segment_bytes
        self._own = own
        self._checkpoint = self._read_checkpoint()
        segments = self._segments_on_disk()
        self._last = max(segments, default=self._checkpoint.segment)
        self._append_fd = -1
        self._size = 0
        self._read_fd = -1
        self._read_segment = -1
        if own:
            self._open_segment(self._last + 1 if segments else self._last)

    @classmethod
    def create(cls, directory: Path, *, segment_bytes: int = 8 << 20) -> Journal:
        """A new journal for this process, under a fresh tag, its lock held."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        tag = secrets.token_hex(8)
        # Locked under a name no other process looks for, then renamed into place: a process starting at the same
        # moment never sees this lock file unlocked (and takes this live process's journal for a dead one's).
        hidden = directory / f".usage-{tag}.lock"
        fd = os.open(hidden, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        hidden.rename(directory / f"usage-{tag}.lock")
        return cls(directory, tag, fd, segment_bytes=segment_bytes, own=True)

    @classmethod
    def adopt(cls, directory: Path, tag: str) -> Journal | None:
        """The journal of process ``tag`` if that process is dead and nobody else has adopted it, locked;
        None otherwise.
        """
        path = directory / f"usage-{tag}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Whoever held the lock before us may have finished and deleted the files: then this is a stale inode.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise FileNotFoundError(path)
        except OSError:  # locked by a live process (BlockingIOError), or gone
            os.close(fd)
            return None
        return cls(directory, tag, fd, segment_bytes=0, own=False)

    @property
    def end(self) -> Position:
        """Where the next record goes (own journal), or the end of the last segment (adopted)."""
        if self._own:
            return Position(self._last, self._size)
        return Position(self._last, self._segment_size(self._last))

    @property
    def checkpoint(self) -> Position:
        """Up to here the database has every record."""
        return self._checkpoint

    def append(self, data: bytes) -> None:
        """Append whole lines with one ``write``; ``UsageJournalError`` if the kernel did not take all of them
        (the partial write is undone).
        """
        try:
            written = os.write(self._append_fd, data)
        except OSError as exc:
            self._undo_partial_write()
            raise UsageJournalError(f"the usage journal cannot be written: {exc}") from exc
        if written != len(data):
            self._undo_partial_write()
            raise UsageJournalError("the usage journal cannot be written: short write (disk full?)")
        self._size += written
        if self._size >= self._segment_bytes:
            os.close(self._append_fd)
            self._open_segment(self._last + 1)

    def read(self, max_records: int, until: Position) -> tuple[list[bytes], Position]:
        """Up to ``max_records`` whole lines from the checkpoint on, not past ``until``, and the position after
        them. A line left unfinished at the end of a dead process's last segment (torn by the crash) is skipped.
        """
        position = self._checkpoint
        while position < until:
            segment_end = until.offset if position.segment == until.segment else self._segment_size(position.segment)
            if position.offset >= segment_end:
                position = Position(position.segment + 1, 0)
                continue
            chunk = os.pread(
                self._reader(position.segment), min(_READ_CHUNK, segment_end - position.offset), position.offset
            )
            complete = chunk.rfind(b"\n") + 1
            if complete == 0:
                if self._own:
                    break  # lines are appended whole, and ``until`` is the end of one: nothing to read yet
                # A dead process's torn last line, or a run of bytes no process wrote (records are short lines).
                log.warning("usage journal %s: skipping %d bytes without a line end", self.tag, len(chunk))
                position = Position(position.segment, position.offset + len(chunk))
                continue
            lines = chunk[:complete].splitlines()
            if len(lines) > max_records:
                lines = lines[:max_records]
                complete = sum(len(line) + 1 for line in lines)
            return lines, Position(position.segment, position.offset + complete)
        return [], position

    def commit(self, position: Position) -> None:
        """Record that the database has every record before ``position``; delete the segments it has whole."""
        tmp = self.directory / f"usage-{self.tag}.checkpoint.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{position.segment} {position.offset}\n".encode())
        finally:
            os.close(fd)
        tmp.replace(self.directory / f"usage-{self.tag}.checkpoint")  # atomic: a crash leaves the old or the new one
        if self._read_segment < position.segment:
            self._close_reader()
        for segment in range(self._checkpoint.segment, position.segment):
            self._segment_path(segment).unlink(missing_ok=True)
        self._checkpoint = position

    def close(self) -> None:
        """Release the files; delete them all if the database has every record, else leave them for replay."""
        complete = self._checkpoint >= self.end
        if self._append_fd >= 0:
            os.close(self._append_fd)
            self._append_fd = -1
        self._close_reader()
        if complete:
            for segment in self._segments_on_disk():
                self._segment_path(segment).unlink(missing_ok=True)
            (self.directory / f"usage-{self.tag}.checkpoint").unlink(missing_ok=True)
            (self.directory / f"usage-{self.tag}.lock").unlink(missing_ok=True)  # still locked: nobody adopts it now
        os.close(self._lock_fd)

    def _open_segment(self, segment: int) -> None:
        path = self._segment_path(segment)
        self._append_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._size = os.fstat(self._append_fd).st_size
        self._last = segment

    def _undo_partial_write(self) -> None:
        try:
            os.ftruncate(self._append_fd, self._size)
        except OSError:
            log.exception("usage journal %s: a partial write could not be undone", self.tag)

    def _reader(self, segment: int) -> int:
        if self._read_segment != segment:
            self._close_reader()
            self._read_fd = os.open(self._segment_path(segment), os.O_RDONLY | os.O_CLOEXEC)
            self._read_segment = segment
        return self._read_fd

    def _close_reader(self) -> None:
        if self._read_fd >= 0:
            os.close(self._read_fd)
        self._read_fd, self._read_segment = -1, -1

    def _segment_size(self, segment: int) -> int:
        if self._own and segment == self._last:
            return self._size
        try:
            return self._segment_path(segment).stat().st_size
        except FileNotFoundError:
            return 0

    def _segment_path(self, segment: int) -> Path:
        return self.directory / f"usage-{self.tag}-{segment:08d}.jsonl"

    def _segments_on_disk(self) -> list[int]:
        found = []
        for path in self.directory.glob(f"usage-{self.tag}-*.jsonl"):
            if (match := _SEGMENT.fullmatch(path.name)) is not None:
                found.append(int(match["segment"]))
        return sorted(found)

    def _read_checkpoint(self) -> Position:
        try:
            segment, offset = (self.directory / f"usage-{self.tag}.checkpoint").read_text().split()
            return Position(int(segment), int(offset))
        except (FileNotFoundError, ValueError):
            return Position(min(self._segments_on_disk(), default=0), 0)


def orphan_tags(directory: Path, *, exclude: str = "") -> list[str]:
    """Tags of the journals in ``directory`` other than ``exclude`` (whose owners may or may not be alive)."""
    if not directory.is_dir():
        return []
    tags = {m["tag"] for p in directory.iterdir() if (m := _LOCK.fullmatch(p.name) or _SEGMENT.fullmatch(p.name))}
    return sorted(tags - {exclude})
