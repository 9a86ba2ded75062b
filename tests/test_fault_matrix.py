"""The fault matrix at small scale (tests/faults.py): per cell, every result the device produced
is stored by the subscriber or reported lost by it (or, after a SIGKILL, covered by the new
epoch's "unclean stop"): nothing silent, nothing extra. ``make faults`` runs it longer and
writes the table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.broker import find_mosquitto
from tests.faults import CELLS, SCALES, Cell, Unavailable, run_cell, scale, table

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")
OUT = Path(os.environ.get("EDGE_FAULTS_OUT", "")) if os.environ.get("EDGE_FAULTS_OUT") else None


@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_every_result_is_stored_or_reported_lost(cell: Cell, demo_bundle: Path, tmp_path: Path) -> None:
    try:
        result = run_cell(cell, tmp_path / "cell", demo_bundle, scale())
    except Unavailable as exc:
        print(exc)
        pytest.skip(str(exc))
    print(table([result]))
    if OUT is not None:  # make faults: one JSON row per cell, gathered into the table afterwards
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / f"{cell.name.replace(' ', '_').replace('/', '_')}.json").write_text(json.dumps(result.row()))
    assert result.produced > 0 and result.stored > 0
    assert result.silent == 0, f"silent losses: {result.silent_examples}"
    assert result.extra == 0
    assert result.holds, result.row()


def test_the_scales_are_known() -> None:
    assert set(SCALES) == {"small", "long"}
