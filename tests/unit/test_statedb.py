"""``--statedb``: revoked ids written atomically to a JSON file and read back with their age."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from celeriac.worker.state import RevokedSet
from celeriac.worker.statedb import FORMAT, StateDBError, load, save


def test_revoked_ids_survive_a_save_and_a_load(tmp_path: Path) -> None:
    path = str(tmp_path / "w1.state")
    revoked = RevokedSet()
    for task_id in ("a", "b", "c"):
        revoked.add(task_id)
    save(path, revoked)
    document = json.loads(Path(path).read_text())
    assert document["format"] == FORMAT
    assert [entry[0] for entry in document["revoked"]] == ["a", "b", "c"]
    assert [p.name for p in tmp_path.iterdir()] == ["w1.state"]  # no temporary file left

    again = RevokedSet()
    assert load(path, again) == 3
    assert all(task_id in again for task_id in ("a", "b", "c"))
    assert load(str(tmp_path / "missing"), RevokedSet()) == 0  # the first start: no file yet


def test_ages_carry_over_so_old_revokes_still_expire(tmp_path: Path) -> None:
    path = tmp_path / "w1.state"
    saved_at = time.time() - 100.0  # saved 100 s ago, by a worker that stopped then
    document = {
        "format": FORMAT,
        "version": 1,
        "saved_at": saved_at,
        "revoked": [["old", 950.0], ["recent", 10.0]],
    }
    path.write_text(json.dumps(document))
    revoked = RevokedSet(expires=1000.0)
    assert load(str(path), revoked) == 1  # "old" is 1050 s old now: past expires
    assert "recent" in revoked and "old" not in revoked
    [(task_id, age)] = revoked.ages()
    assert task_id == "recent" and 110.0 <= age < 120.0


def test_restore_keeps_the_newest_within_maxlen() -> None:
    revoked = RevokedSet(maxlen=2)
    revoked.restore([("a", 30.0), ("b", 20.0), ("c", 10.0)])
    assert [task_id for task_id, _ in revoked.ages()] == ["b", "c"]
    changes = revoked.changes
    revoked.add("d")
    revoked.discard("nope")  # nothing removed: not a change
    assert revoked.changes == changes + 1


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "unexpected"),
        ('{"format": "shelve"}', "not a celeriac state file"),
        ('{"format": "celeriac-statedb", "version": 9}', "version 9"),
        ('{"format": "celeriac-statedb", "version": 1, "saved_at": 1}', "revoked"),
    ],
)
def test_a_file_that_is_not_a_state_file_is_an_error_naming_it(
    tmp_path: Path, content: str, reason: str
) -> None:
    path = tmp_path / "w1.state"
    path.write_text(content)
    with pytest.raises(StateDBError, match=f"--statedb {path}: .*{reason}"):
        load(str(path), RevokedSet())


def test_a_save_that_cannot_write_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "w1.state"
    with pytest.raises(StateDBError, match=f"--statedb {path}: cannot write it"):
        save(str(path), RevokedSet())
