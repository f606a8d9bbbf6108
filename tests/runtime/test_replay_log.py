"""The replay cache on disk: an id accepted once, refused after a restart, forgotten and its file
removed once expired; torn lines skipped; a failed write refuses the message instead of accepting it."""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest

from pdsno.canonical import utcnow
from pdsno.errors import NIBError, ReasonCode
from pdsno.messaging.replay import ReplayLog


def ids(n: int) -> list[str]:
    return [str(uuid.uuid4()) for _ in range(n)]


def test_each_id_is_accepted_once_and_still_refused_after_a_restart(tmp_path: Path) -> None:
    log = ReplayLog(tmp_path / "replay")
    later = utcnow() + timedelta(seconds=600)
    first, second = ids(2)
    assert log.first_sighting(first, later) is True
    assert log.first_sighting(first, later) is False
    assert log.first_sighting(second, later) is True
    log.close()  # as a crash would leave it: nothing more than what write(2) put in the file

    restarted = ReplayLog(tmp_path / "replay")
    assert len(restarted) == 2
    assert restarted.first_sighting(first, later) is False
    assert restarted.first_sighting(second, later) is False
    assert restarted.first_sighting(ids(1)[0], later) is True
    assert (tmp_path / "replay").stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in (tmp_path / "replay").iterdir())
    restarted.close()


def test_expired_ids_are_forgotten_and_their_files_removed(tmp_path: Path) -> None:
    directory = tmp_path / "replay"
    gone, kept = ids(2)
    log = ReplayLog(directory)
    assert log.first_sighting(gone, utcnow() + timedelta(milliseconds=20))
    log.close()
    (expired_file,) = directory.iterdir()
    time.sleep(0.05)

    restarted = ReplayLog(directory)
    assert len(restarted) == 0  # the expired id is not read back ...
    assert not expired_file.exists()  # ... and the file that held only it is gone
    assert restarted.first_sighting(kept, utcnow() + timedelta(seconds=600))
    restarted.close()

    again = ReplayLog(directory)
    assert len(again) == 1 and again.first_sighting(kept, utcnow()) is False
    again.close()


def test_a_torn_line_is_skipped_and_the_rest_read_back(tmp_path: Path) -> None:
    directory = tmp_path / "replay"
    log = ReplayLog(directory)
    kept = ids(1)[0]
    log.first_sighting(kept, utcnow() + timedelta(seconds=600))
    log.close()
    (current,) = directory.iterdir()
    with current.open("ab") as handle:
        handle.write(b"\x00\x00\x00garbage\n17")  # what a power cut may leave at the end

    restarted = ReplayLog(directory)
    assert len(restarted) == 1 and restarted.first_sighting(kept, utcnow()) is False
    restarted.close()


def test_a_failed_write_refuses_the_message_and_remembers_nothing(tmp_path: Path) -> None:
    log = ReplayLog(tmp_path / "replay")
    message_id = ids(1)[0]
    os.close(log._fd)  # the file can no longer be written, as on a full or failing disk
    with pytest.raises(NIBError) as refused:
        log.first_sighting(message_id, utcnow() + timedelta(seconds=600))
    assert refused.value.code is ReasonCode.NIB_UNAVAILABLE
    assert len(log) == 0
    log._fd = -1


def test_an_unreadable_directory_is_one_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "replay"
    blocker.write_text("not a directory")
    with pytest.raises(NIBError, match="cannot read the replay log"):
        ReplayLog(blocker)


def test_an_id_whose_handling_failed_is_taken_back_also_after_a_restart(tmp_path: Path) -> None:
    log = ReplayLog(tmp_path / "replay")
    later = utcnow() + timedelta(seconds=600)
    failed, handled = ids(2)
    assert log.first_sighting(failed, later) and log.first_sighting(handled, later)
    log.forget(failed)
    assert log.first_sighting(failed, later) is True  # the redelivered copy is handled
    log.forget(failed)
    log.close()

    restarted = ReplayLog(tmp_path / "replay")
    assert restarted.first_sighting(failed, later) is True
    assert restarted.first_sighting(handled, later) is False
    restarted.close()
