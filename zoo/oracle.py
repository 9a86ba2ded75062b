"""Oracles: each package's own inference code, run in a virtualenv of its own on the zoo's images.

An :class:`Oracle` names the pinned requirements of that virtualenv (made once and cached by
:func:`exporter.toolenv.ensure_spec_env`, like the converters' environments) and a script of
``zoo/oracles/`` that runs the package on a folder of images and writes JSON (``{"images": {name:
{"width", "height", "detections": [{"box": [x1, y1, x2, y2], "score", "label"}]}}}``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.fetch import NO_NETWORK, ZooError

logger = logging.getLogger("zoo")

ORACLES = Path(__file__).resolve().parent / "oracles"


@dataclass(frozen=True)
class Oracle:
    """A package's own pipeline: ``requirements`` (every version pinned, one pip call), the module
    whose import proves the install, the script in ``zoo/oracles/``, and the score threshold above
    which the package reports a detection; ``no_deps``: packages installed after, in a second pip
    call with ``--no-deps`` (a package whose declared requirements the oracle replaces); ``args``:
    passed to the script after ``IMAGE_DIR OUT_JSON``."""

    name: str
    requirements: tuple[str, ...]
    check_import: str
    script: str
    threshold: float
    no_deps: tuple[str, ...] = ()
    args: tuple[str, ...] = ()


def run_oracle(oracle: Oracle, images: Path, out: Path) -> dict[str, Any]:
    """Run ``oracle`` on ``images`` (its virtualenv made first when missing); write and return its JSON."""
    from exporter.toolenv import ToolEnvError, ToolSpec, ensure_spec_env

    spec = ToolSpec(
        name=f"zoo-oracle-{oracle.name}",
        requirements=(oracle.requirements, *(((*oracle.no_deps, "--no-deps"),) if oracle.no_deps else ())),
        check_import=oracle.check_import,
        purpose=f"the zoo's {oracle.name} oracle",
    )
    try:
        env = ensure_spec_env(spec)
        output = env.run(
            [str(ORACLES / oracle.script), str(images), str(out), *oracle.args], cwd=out.parent, what=oracle.script
        )
    except ToolEnvError as exc:
        text = str(exc)
        first = text.splitlines()[0] if text else "failed"
        if NO_NETWORK.search(text):
            raise ZooError(f"oracle {oracle.name}: no network to PyPI to build its virtualenv ({first})") from None
        raise ZooError(f"oracle {oracle.name}: {first}") from None
    (out.parent / "logs").mkdir(exist_ok=True)
    (out.parent / "logs" / "oracle.log").write_text(output)
    document: dict[str, Any] = json.loads(out.read_text())
    return document


__all__ = ["ORACLES", "Oracle", "run_oracle"]
