"""The one check of a refused command line: exit 2, no traceback, exactly one ``error:`` line."""

from __future__ import annotations

import subprocess


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single ``error:`` line of a command that must refuse its input with exit status 2."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]
