"""The usage journal on real files: append, read back, checkpoint, rotation, adoption of a dead process's files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cloudeasyml.metering.journal import Journal, Position, orphan_tags


def lines(n: int, start: int = 0) -> list[bytes]:
    return [b'{"n":%d}' % i for i in range(start, start + n)]


def append_all(journal: Journal, records: list[bytes]) -> None:
    for record in records:
        journal.append(record + b"\n")


def read_all(journal: Journal, batch: int = 1000) -> list[bytes]:
    """What the database writer does: read, 'write', commit, until the end."""
    got: list[bytes] = []
    until = journal.end
    while True:
        batch_lines, position = journal.read(batch, until)
        got += batch_lines
        if position == journal.checkpoint:
            return got
        journal.commit(position)


def test_appended_records_read_back_in_order_and_the_checkpoint_moves(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path)
    append_all(journal, lines(5))
    first, position = journal.read(2, journal.end)
    assert first == lines(2)
    assert journal.checkpoint == Position(0, 0)  # reading alone does not move it: a failed write reads again
    assert journal.read(2, journal.end)[0] == lines(2)
    journal.commit(position)
    assert read_all(journal) == lines(3, 2)
    assert journal.checkpoint == journal.end
    assert read_all(journal) == []


def test_reading_stops_at_the_given_end(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path)
    append_all(journal, lines(3))
    until = journal.end
    append_all(journal, lines(2, 3))
    got, position = journal.read(100, until)
    assert got == lines(3) and position == until


def test_segments_rotate_and_are_deleted_once_written(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, segment_bytes=64)
    append_all(journal, lines(40))
    segments = sorted(tmp_path.glob("usage-*.jsonl"))
    assert len(segments) > 5
    got = read_all(journal, batch=7)
    assert got == lines(40)
    left = sorted(tmp_path.glob("usage-*.jsonl"))
    assert len(left) == 1 and left[0] == segments[-1]  # only the segment being appended to


def test_a_closed_journal_that_was_fully_written_leaves_no_files(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, segment_bytes=64)
    append_all(journal, lines(20))
    read_all(journal)
    journal.close()
    assert list(tmp_path.iterdir()) == []


def test_a_live_process_journal_cannot_be_adopted(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path)
    append_all(journal, lines(2))
    assert orphan_tags(tmp_path) == [journal.tag]
    assert Journal.adopt(tmp_path, journal.tag) is None
    assert orphan_tags(tmp_path, exclude=journal.tag) == []


def _killed_writer(directory: Path, count: int, torn: bytes = b"") -> None:
    """A real process that journals ``count`` records (and then half a line) and is killed, never closing."""
    code = (
        "import os, sys, signal; from pathlib import Path; from cloudeasyml.metering.journal import Journal\n"
        f"j = Journal.create(Path({str(directory)!r}), segment_bytes=256)\n"
        f"for i in range({count}): j.append(b'{{\"n\":%d}}\\n' % i)\n"
        f"os.write(j._append_fd, {torn!r})\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == -9, result.stderr


def test_a_dead_process_journal_is_adopted_once_and_replays_everything_it_wrote(tmp_path: Path) -> None:
    _killed_writer(tmp_path, 50)
    (tag,) = orphan_tags(tmp_path)
    adopted = Journal.adopt(tmp_path, tag)
    assert adopted is not None
    assert Journal.adopt(tmp_path, tag) is None  # a second live process never replays the same files
    assert read_all(adopted, batch=9) == lines(50)
    adopted.close()
    assert list(tmp_path.iterdir()) == []
    assert Journal.adopt(tmp_path, tag) is None


def test_a_torn_last_line_left_by_a_crash_is_ignored(tmp_path: Path) -> None:
    _killed_writer(tmp_path, 3, torn=b'{"n":99,"half')
    (tag,) = orphan_tags(tmp_path)
    adopted = Journal.adopt(tmp_path, tag)
    assert adopted is not None
    assert read_all(adopted) == lines(3)
    assert adopted.checkpoint == adopted.end


def test_replay_resumes_from_the_checkpoint_of_the_dead_process(tmp_path: Path) -> None:
    code = (
        "import os, signal; from pathlib import Path; from cloudeasyml.metering.journal import Journal\n"
        f"j = Journal.create(Path({str(tmp_path)!r}), segment_bytes=128)\n"
        "for i in range(30): j.append(b'{\"n\":%d}\\n' % i)\n"
        "got, pos = j.read(12, j.end); j.commit(pos)\n"  # the database had the first 12 when it died
        "for i in range(30, 35): j.append(b'{\"n\":%d}\\n' % i)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60).returncode == -9
    (tag,) = orphan_tags(tmp_path)
    adopted = Journal.adopt(tmp_path, tag)
    assert adopted is not None
    assert read_all(adopted) == lines(23, 12)


def test_a_write_cut_short_by_a_full_disk_is_undone_and_reported(tmp_path: Path) -> None:
    """The kernel's own short write: a file size limit (as a full disk would) stops a write midway; the journal
    takes the partial line back, so the records before it stay whole and a later append starts on a line.
    """
    code = (
        "import resource, signal, sys; from pathlib import Path\n"
        "from cloudeasyml.metering.journal import Journal; from cloudeasyml.errors import UsageJournalError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        f"j = Journal.create(Path({str(tmp_path)!r}))\n"
        "hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (110, hard))\n"
        "ok = 0\n"
        "try:\n"
        '    for i in range(100): j.append(b\'{"n":%d,"pad":"xxxxxxxx"}\\n\' % i); ok += 1\n'
        "except UsageJournalError as exc: print(ok, exc)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))\n"
        "j.append(b'{\"n\":-1}\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    written, message = result.stdout.split(" ", 1)
    assert (
        int(written) == 4 and "cannot be written" in message
    )  # 4 lines of 25 bytes fit in 110, the 5th is cut after 10
    (segment,) = tmp_path.glob("*.jsonl")
    assert segment.read_bytes().splitlines() == [
        *(b'{"n":%d,"pad":"xxxxxxxx"}' % i for i in range(4)),
        b'{"n":-1}',
    ]


def test_an_unwritable_journal_directory_is_reported_as_a_journal_error(tmp_path: Path) -> None:
    import asyncio

    from cloudeasyml.errors import UsageJournalError
    from cloudeasyml.metering.meter import Meter

    (tmp_path / "journal").write_text("a file, not a directory")
    meter = Meter(None, tmp_path / "journal")  # type: ignore[arg-type]
    try:
        asyncio.run(meter.start())
    except UsageJournalError as exc:
        assert "cannot be opened" in str(exc)
    else:
        raise AssertionError("the meter started without a journal")
