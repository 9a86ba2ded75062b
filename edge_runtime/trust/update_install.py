"""Install an update in one call: stage, verify and activate it in the A/B slots, or refuse it.

:func:`install_update` runs the steps of :class:`~edge_runtime.trust.updates.Slots` (stage the
package, verify signature, hashes and self-test, activate the slot), records a refusal in the
slots' history and returns an :class:`UpdateOutcome` instead of raising. The daemon calls it for
``Daemon.request_update`` (the ``update`` remote command); ``edge-runtime update`` calls it too.

Example::

    slots = Slots.open("/var/lib/edge-runtime")
    outcome, _ = install_update(slots, "https://updates.example/demo-v2.tar.gz",
                                build_engine=lambda path: Engine.from_bundle(path))
    print(outcome.ok, outcome.reason, outcome.version)

CLI: ``edge-runtime update https://updates.example/demo-v2.tar.gz``, ``edge-runtime update --status``
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_runtime.bundle.reader import read_manifest
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.names import redact_url
from edge_runtime.trust.updates import DEFAULT_MAX_DOWNLOAD_MB, Slots

if TYPE_CHECKING:
    from edge_runtime.inference.engine import Engine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpdateOutcome:
    """What became of one update (or rollback) request.

    ``ok``: the new bundle is active (and, in a running daemon, processing frames); ``reason``:
    one human line (the error when not ok); ``name`` / ``version``: the bundle now active
    (None when unknown); ``slot``: its slot (``A``/``B``; None = the factory bundle);
    ``previous_version``: the version it replaced.
    """

    ok: bool
    reason: str
    source: str = ""
    name: str | None = None
    version: str | None = None
    slot: str | None = None
    previous_version: str | None = None


def install_update(
    slots: Slots,
    source: str,
    *,
    build_engine: Callable[[Path], Engine] | None = None,
    trusted_keys: Sequence[str | Path] | None = None,
    base: Path | None = None,
    max_download_mb: int = DEFAULT_MAX_DOWNLOAD_MB,
    keep_engine: bool = False,
) -> tuple[UpdateOutcome, Engine | None]:
    """Stage, verify and activate ``source``; never raises for an update that fails (the
    outcome says why and the history records it). With ``keep_engine`` the verified engine
    (already moved to the slot) is returned open, for a hot swap. A password in a URL source
    is never logged, recorded or returned."""
    shown = redact_url(source)
    previous = slots.installed_info(slots.active_slot()).get("version")
    engine: Engine | None = None
    try:
        logger.info("update from %s: staging", shown)
        staged = slots.stage(source, trusted_keys=trusted_keys, base=base, max_download_mb=max_download_mb)
        logger.info("update: verifying %s (signature%s, hashes, self-test)", staged, "" if trusted_keys else " skipped")
        engine = slots.verify(staged, trusted_keys=trusted_keys, build_engine=build_engine)
        target = slots.activate(staged, source=shown)
    except EdgeRuntimeError as exc:
        if engine is not None:
            engine.close()
        reason = str(exc)
        logger.error("update from %s refused: %s", shown, reason)
        with contextlib.suppress(EdgeRuntimeError, OSError):
            slots.record(shown, "refused", reason)
        return UpdateOutcome(ok=False, reason=reason, source=shown, previous_version=previous), None
    if engine is not None:
        from edge_runtime.bundle.reader import Bundle

        engine.bundle = Bundle(root=target, manifest=engine.manifest)  # the staged dir moved there
        if not keep_engine:
            engine.close()
            engine = None
    manifest = read_manifest(target)
    outcome = UpdateOutcome(
        ok=True,
        reason=f"{manifest.name} v{manifest.version} installed in slot {target.name}",
        source=shown,
        name=manifest.name,
        version=manifest.version,
        slot=target.name,
        previous_version=previous,
    )
    return outcome, engine
