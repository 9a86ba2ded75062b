"""The epoch rule of the state directory (edge_runtime/delivery/state.py): a seq is never issued
twice within an epoch, so every way the state can lose track of seq starts a new epoch and says why."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_runtime.delivery.state import (
    MAX_SEQ,
    NEW_STATE,
    SPOOL_REPLACED,
    SPOOL_ROLLED_BACK,
    STATE_OLDER,
    UNCLEAN_STOP,
    StateDir,
)
from edge_runtime.errors import ConfigError


def clean_run(root: Path, identity: str | None, next_seq: int | None, end: int) -> str:
    state = StateDir.open(root)
    epoch = state.begin(identity, next_seq).epoch
    writer = state.high_water()
    writer.write(end)
    writer.close()
    state.end(end)
    return epoch


def test_a_new_state_directory_starts_an_epoch_at_the_spool_s_next_seq(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path / "s")
    assert state.info is None and state.epoch == ""
    info = state.begin("spool-a", 0)
    assert info.reason == NEW_STATE and info.first_seq == 0 and info.spool == "spool-a"
    assert len(info.epoch) == 16 and state.epoch == info.epoch and state.running
    assert (tmp_path / "s" / "running").exists()
    recorded = json.loads((tmp_path / "s" / "epoch.json").read_text())
    assert recorded["epoch"] == info.epoch and recorded["first_seq"] == 0


def test_a_clean_stop_keeps_the_epoch(tmp_path: Path) -> None:
    first = clean_run(tmp_path, "spool-a", 0, 40)
    assert not (tmp_path / "running").exists()
    state = StateDir.open(tmp_path)
    info = state.begin("spool-a", 40)
    assert info.epoch == first and info.first_seq == 0 and info.reason == NEW_STATE


@pytest.mark.parametrize(
    ("identity", "next_seq", "reason"),
    [
        ("spool-b", 0, SPOOL_REPLACED),  # truncated / deleted / moved aside: a new file
        ("spool-a", 25, SPOOL_ROLLED_BACK),  # lost commits (a corrupt WAL discarded by SQLite)
        ("spool-a", 55, STATE_OLDER),  # the state directory restored from an older copy
    ],
)
def test_a_spool_that_cannot_prove_seq_is_current_starts_a_new_epoch(
    tmp_path: Path, identity: str, next_seq: int, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    first = clean_run(tmp_path, "spool-a", 0, 40)
    state = StateDir.open(tmp_path)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.delivery.state"):
        info = state.begin(identity, next_seq)
    assert info.epoch != first and info.reason.startswith(reason), info.reason
    assert info.first_seq == next_seq and state.load_seq() == next_seq
    assert f"new epoch {info.epoch} (was {first})" in caplog.text


def test_an_unclean_stop_starts_a_new_epoch_even_without_a_spool(tmp_path: Path) -> None:
    state = StateDir.open(tmp_path)
    first = state.begin().epoch
    state.save_seq(100)  # the daemon saves periodically; then it is killed (no end())
    again = StateDir.open(tmp_path).begin()
    assert again.epoch != first and again.reason.startswith(UNCLEAN_STOP) and again.first_seq == 100
    assert "did not stop cleanly" in again.reason


def test_the_high_water_mark_is_rewritten_in_place(tmp_path: Path) -> None:
    (tmp_path / "seq").write_text("123456789012\n")  # an older, longer value in the old format
    state = StateDir.open(tmp_path)
    assert state.load_seq() == 123456789012
    writer = state.high_water()
    writer.write(7)
    assert state.load_seq() == 7
    inode = (tmp_path / "seq").stat().st_ino
    for value in (8, 9, 10_000):
        writer.write(value)
    writer.close()
    assert state.load_seq() == 10_000 and (tmp_path / "seq").stat().st_ino == inode


@pytest.mark.parametrize("text", ["abc", str(MAX_SEQ + 1), "-3"])
def test_a_bad_seq_file_is_one_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "seq").write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        StateDir.open(tmp_path).load_seq()
    assert str(tmp_path / "seq") in str(caught.value) and "delete it" in str(caught.value)


def test_an_older_plain_epoch_file_is_migrated(tmp_path: Path) -> None:
    (tmp_path / "epoch").write_text("0123456789abcdef\n")
    (tmp_path / "seq").write_text("40\n")
    state = StateDir.open(tmp_path)
    assert state.epoch == "0123456789abcdef"
    info = state.begin("spool-a", 40)  # the spool stands where the state says: provably current
    assert info.epoch == "0123456789abcdef"
    assert not (tmp_path / "epoch").exists() and json.loads((tmp_path / "epoch.json").read_text())["spool"] == "spool-a"


def test_a_malformed_epoch_record_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "epoch.json").write_text('{"epoch": ')
    with pytest.raises(ConfigError) as caught:
        StateDir.open(tmp_path)
    assert "epoch.json" in str(caught.value) and "delete it" in str(caught.value)
