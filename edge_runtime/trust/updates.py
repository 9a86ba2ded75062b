"""Over-the-air updates: stage, verify and switch bundles between two slots (A/B), with rollback.

Layout under the state directory::

    <state_dir>/bundles/state.json      active / previous slot, boot attempts, history (atomic)
    <state_dir>/bundles/slots/A/        a bundle directory
    <state_dir>/bundles/slots/B/        the other one
    <state_dir>/bundles/staging-<rand>/ an update being downloaded and verified

``active`` is the slot the daemon runs (``None``: the configured, factory bundle); ``previous``
is the one it ran before (``None``: the factory bundle). An update is staged (a bundle
directory, a ``.tar.gz``/``.tgz`` of one, or an ``http(s)://`` URL of such a tarball), completed
from the running bundle when it is a head-only package (files the manifest lists but the
package lacks are taken from the base when their sha256 matches), verified (signature when
keys are given, every hash, the engine loads, the self-test passes), then moved into the
inactive slot and made active in one ``os.replace`` of ``state.json``.

The steps are :class:`Slots` methods; :func:`~edge_runtime.trust.update_install.install_update`
runs them all and never raises for a refused update. A slot that keeps crashing on start is
rolled back by :meth:`Slots.begin_boot` / :meth:`Slots.boot_ok`.

Example::

    slots = Slots.open("/var/lib/edge-runtime")
    staged = slots.stage("https://updates.example/demo-v2.tar.gz")      # UpdateError when refused
    slots.verify(staged, trusted_keys=["vendor.pub"])  # build_engine=...: the self-test too
    slots.activate(staged, source="https://updates.example/demo-v2.tar.gz")
    print(slots.describe())

CLI: ``edge-runtime update https://updates.example/demo-v2.tar.gz``, ``edge-runtime update --status``
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.bundle.reader import load_bundle, read_manifest, sha256_file
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.names import redact_url
from edge_runtime.trust.update_package import open_package, stage_package

if TYPE_CHECKING:
    from edge_runtime.inference.engine import Engine

logger = logging.getLogger(__name__)

SLOT_NAMES = ("A", "B")
STATE_NAME = "state.json"
HISTORY_LENGTH = 20
DEFAULT_MAX_DOWNLOAD_MB = 512
DEFAULT_MAX_BOOT_ATTEMPTS = 3
DOWNLOAD_TIMEOUT_S = 30.0
PROGRESS_EVERY_BYTES = 4 << 20


class UpdateError(EdgeRuntimeError):
    """An update could not be staged, verified, activated or rolled back; the message says why."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Slots:
    """The A/B bundle slots of one state directory. Use :meth:`open`.

    Every read-modify-write of ``state.json`` holds an exclusive ``flock`` on ``.lock``, so the
    ``edge-runtime update`` command and a running daemon can change it concurrently.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_path = root / STATE_NAME

    @classmethod
    def open(cls, state_dir: str | Path) -> Slots:
        """The slots under ``<state_dir>/bundles`` (created when missing)."""
        root = Path(state_dir) / "bundles"
        try:
            (root / "slots").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UpdateError(f"{root}: cannot create the update slots: {exc.strerror or exc}") from exc
        return cls(root)

    # -- state.json -------------------------------------------------------------------------
    def read_state(self) -> dict[str, Any]:
        """``state.json`` (defaults when missing): active, previous, pending_boot_attempts,
        generation, installed (per slot), history."""
        state: dict[str, Any] = {
            "active": None,
            "previous": None,
            "pending_boot_attempts": 0,
            "generation": 0,
            "installed": {},
            "history": [],
        }
        try:
            data = loads_bounded(self.state_path.read_bytes())
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as exc:  # ValueError: bad UTF-8 or JSON, nested too deeply
            raise UpdateError(
                f"{self.state_path}: unreadable ({exc}); delete it to return to the factory bundle"
            ) from exc
        if isinstance(data, dict):
            state.update(data)
        for key in ("active", "previous"):
            if state[key] not in (None, *SLOT_NAMES):
                raise UpdateError(f"{self.state_path}: {key} {state[key]!r} is not one of {', '.join(SLOT_NAMES)}")
        return state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        """The state under an exclusive lock; written back (atomically) when the block ends."""
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                state = self.read_state()
                yield state
                _atomic_write_json(self.state_path, state)
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def mtime(self) -> float:
        """``state.json``'s modification time (0 when missing): cheap to poll."""
        try:
            return self.state_path.stat().st_mtime
        except OSError:
            return 0.0

    def slot_path(self, slot: str) -> Path:
        return self.root / "slots" / slot

    def active_slot(self) -> str | None:
        return self.read_state()["active"]

    def active_bundle(self) -> Path | None:
        """The active slot's bundle directory, or None: run the configured (factory) bundle."""
        slot = self.active_slot()
        return None if slot is None else self.slot_path(slot)

    def installed_info(self, slot: str | None) -> dict[str, Any]:
        """What ``activate`` recorded about a slot (name, version, installed, source)."""
        if slot is None:
            return {}
        info = self.read_state()["installed"].get(slot)
        return dict(info) if isinstance(info, dict) else {}

    def record(self, source: str, outcome: str, reason: str) -> None:
        """Append one line to the history (kept to the last few)."""
        with self._locked() as state:
            _append_history(state, source, outcome, reason)

    # -- staging ----------------------------------------------------------------------------
    def stage(
        self,
        source: str,
        *,
        trusted_keys: Sequence[str | Path] | None = None,
        base: Path | None = None,
        max_download_mb: int = DEFAULT_MAX_DOWNLOAD_MB,
    ) -> Path:
        """Stage ``source`` in a fresh staging directory and return the staged bundle directory.

        Nothing of the package is written before its manifest (and, with ``trusted_keys``, its
        signature) has been checked and every member has been matched against the manifest's
        ``files`` (:mod:`edge_runtime.trust.update_package`); a head-only package is completed from
        ``base`` (default: the active slot). :meth:`verify` then checks every hash and runs the
        self-test. A refused package leaves nothing behind."""
        staging = self.root / f"staging-{secrets.token_hex(4)}"
        staging.mkdir()
        try:
            keys = None
            if trusted_keys:
                from edge_runtime.trust.keys import load_public_keys

                keys = load_public_keys(trusted_keys)
            max_bytes = max_download_mb << 20
            path = Path(source)
            if source.startswith(("http://", "https://")):
                path = staging / "download.tar.gz"
                _download(source, path, max_bytes)
            elif "://" in source:
                raise UpdateError(
                    f"{redact_url(source)}: unsupported scheme; use a directory, a .tar.gz / .tgz or http(s)://"
                )
            bundle_dir = staging / "bundle"
            with open_package(path, redact_url(source), max_bytes=max_bytes) as package:
                stage_package(
                    package,
                    bundle_dir,
                    keys=keys,
                    base=base if base is not None else self.active_bundle(),
                    max_bytes=max_bytes,
                )
            if path.parent == staging:
                path.unlink()
            return bundle_dir
        except BaseException as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, EdgeRuntimeError) and not isinstance(exc, UpdateError):
                raise UpdateError(str(exc)) from exc
            raise

    def discard(self, staged: Path) -> None:
        """Delete a staged bundle (its ``staging-*`` directory)."""
        target = staged
        while target.parent != self.root and target.parent != target:
            target = target.parent
        if target.parent == self.root and target.name.startswith("staging-"):
            shutil.rmtree(target, ignore_errors=True)

    def verify(
        self,
        staged: Path,
        *,
        trusted_keys: Sequence[str | Path] | None = None,
        build_engine: Callable[[Path], Engine] | None = None,
    ) -> Engine | None:
        """Signature (when ``trusted_keys``), every hash, then (with ``build_engine``) load the
        engine and run the bundle's self-test. Returns the engine (open: the caller owns it).
        On failure the staged directory is deleted and :class:`UpdateError` says why."""
        engine: Engine | None = None
        try:
            if trusted_keys:
                from edge_runtime.trust.keys import load_public_keys

                load_bundle(staged, trusted_keys=load_public_keys(trusted_keys))
            else:
                load_bundle(staged)
            if build_engine is None:
                return None
            engine = build_engine(staged)
            _run_selftest(engine)
            return engine
        except BaseException as exc:
            if engine is not None:
                engine.close()
            self.discard(staged)
            if isinstance(exc, UpdateError):
                raise
            if isinstance(exc, EdgeRuntimeError):
                raise UpdateError(f"verification failed: {exc}") from exc
            raise

    # -- switching --------------------------------------------------------------------------
    def activate(self, staged: Path, *, source: str = "") -> Path:
        """Move a verified staged bundle into the inactive slot and make it active (the active
        one becomes ``previous``; the old ``previous`` is replaced). Returns the slot's path."""
        manifest = read_manifest(staged)
        with self._locked() as state:
            active = state["active"]
            slot = next(s for s in SLOT_NAMES if s != active)
            target = self.slot_path(slot)
            if target.exists():
                trash = self.root / f"staging-old-{secrets.token_hex(4)}"
                os.replace(target, trash)
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(staged, target)
            _fsync_dir(target.parent)
            self.discard(staged)
            previous_version = _version_of(state, active)
            state["installed"][slot] = {
                "name": manifest.name,
                "version": manifest.version,
                "installed": _now_iso(),
                "source": source,
            }
            state["previous"] = active
            state["active"] = slot
            state["pending_boot_attempts"] = 0
            state["generation"] = int(state.get("generation", 0)) + 1
            _append_history(
                state,
                source,
                "installed",
                f"{manifest.name} v{manifest.version} in slot {slot} (was {previous_version})",
            )
        logger.info("update: %s v%s is active in slot %s", manifest.name, manifest.version, slot)
        return target

    def rollback(self, reason: str) -> str | None:
        """Make ``previous`` active again (None: the factory bundle); returns the slot now
        active. Raises :class:`UpdateError` when nothing was installed."""
        with self._locked() as state:
            active = state["active"]
            if active is None:
                raise UpdateError("nothing to roll back: the factory (configured) bundle is running")
            previous = state["previous"]
            if previous is not None and not self.slot_path(previous).is_dir():
                previous = None
            state["active"], state["previous"] = previous, None
            state["pending_boot_attempts"] = 0
            state["generation"] = int(state.get("generation", 0)) + 1
            now = _version_of(state, previous)
            _append_history(state, "rollback", "rolled back", f"{reason}; slot {active} -> {now}")
        logger.warning("update: rolled back from slot %s to %s: %s", active, previous or "the factory bundle", reason)
        return previous

    def reset(self, reason: str = "reset requested") -> None:
        """Return to the configured (factory) bundle; the slots stay on disk until replaced."""
        with self._locked() as state:
            state["previous"], state["active"] = state["active"], None
            state["pending_boot_attempts"] = 0
            state["generation"] = int(state.get("generation", 0)) + 1
            _append_history(state, "reset", "reset", reason)

    # -- crash-on-start detection -----------------------------------------------------------
    def begin_boot(self, max_attempts: int = DEFAULT_MAX_BOOT_ATTEMPTS, factory: Path | None = None) -> str | None:
        """Called before the daemon loads the active slot: count this start, and when the
        last ``max_attempts`` starts never reached :meth:`boot_ok`, roll back first. Returns
        the slot to run (None: the factory bundle).

        ``factory``: the configured bundle. When its ``manifest.json`` differs from the one
        seen at the previous start, it was deployed anew (``devices/deploy.sh``, a new image):
        a deployment supersedes earlier over-the-air updates, so the slots are reset to it.
        """
        if factory is not None:
            self._follow_factory(factory)
        state = self.read_state()
        if state["active"] is None:
            return None
        attempts = int(state.get("pending_boot_attempts", 0))
        if attempts >= max_attempts:
            self.rollback(f"slot {state['active']} failed to start {attempts} times in a row")
        with self._locked() as state:
            if state["active"] is not None:
                state["pending_boot_attempts"] = int(state.get("pending_boot_attempts", 0)) + 1
            active: str | None = state["active"]
            return active

    def _follow_factory(self, factory: Path) -> None:
        try:
            digest = sha256_file(factory / "manifest.json")
        except OSError:
            return  # the daemon's own load names the missing bundle
        state = self.read_state()
        if state.get("factory_manifest") == digest:
            return
        with self._locked() as state:
            seen = state.get("factory_manifest")
            state["factory_manifest"] = digest
            if seen is not None and state["active"] is not None:
                reason = f"the configured bundle {factory} was deployed anew: it supersedes the update slots"
                logger.warning("%s (slot %s was active)", reason, state["active"])
                state["previous"], state["active"] = state["active"], None
                state["pending_boot_attempts"] = 0
                state["generation"] = int(state.get("generation", 0)) + 1
                _append_history(state, str(factory), "reset", reason)

    def boot_ok(self) -> None:
        """The running slot processed frames: it does not crash on start."""
        if int(self.read_state().get("pending_boot_attempts", 0)) == 0:
            return
        with self._locked() as state:
            state["pending_boot_attempts"] = 0

    def describe(self) -> str:
        """Slots and history, for ``edge-runtime update --status``."""
        state = self.read_state()
        lines = [f"update slots in {self.root}"]
        for slot in SLOT_NAMES:
            info = state["installed"].get(slot) or {}
            marks = [m for m, s in (("active", state["active"]), ("previous", state["previous"])) if s == slot]
            present = self.slot_path(slot).is_dir()
            what = (
                f"{info.get('name')} v{info.get('version')} installed {info.get('installed')} from {info.get('source')}"
                if present and info
                else "empty"
            )
            lines.append(f"  slot {slot}{' (' + ', '.join(marks) + ')' if marks else ''}: {what}")
        if state["active"] is None:
            lines.append("  running: the configured (factory) bundle")
        if state.get("pending_boot_attempts"):
            lines.append(f"  pending boot attempts: {state['pending_boot_attempts']}")
        lines.append("history:" if state["history"] else "history: none")
        lines += [
            f"  {h.get('time')} {h.get('outcome')}: {h.get('reason')} [{h.get('source')}]" for h in state["history"]
        ]
        return "\n".join(lines)


def _append_history(state: dict[str, Any], source: str, outcome: str, reason: str) -> None:
    history = list(state.get("history") or [])
    history.append({"time": _now_iso(), "source": source, "outcome": outcome, "reason": reason})
    state["history"] = history[-HISTORY_LENGTH:]


def _version_of(state: dict[str, Any], slot: str | None) -> str:
    if slot is None:
        return "the factory bundle"
    info = state["installed"].get(slot) or {}
    return f"{info.get('name', '?')} v{info.get('version', '?')}"


def _download(url: str, target: Path, max_bytes: int) -> None:
    """Fetch ``url`` into ``target``, refusing more than ``max_bytes``."""
    shown = redact_url(url)  # messages and logs never show a password
    logger.info("downloading %s", shown)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, target.open("wb") as out:
            length = response.headers.get("Content-Length")
            if length is not None and length.isdigit() and int(length) > max_bytes:
                raise UpdateError(
                    f"{shown}: {int(length) / 1e6:.1f} MB is over the download limit of {max_bytes >> 20} MiB "
                    "(update_max_download_mb)"
                )
            received = 0
            next_report = PROGRESS_EVERY_BYTES
            while True:
                chunk = response.read(1 << 16)
                if not chunk:
                    break
                received += len(chunk)
                if received > max_bytes:
                    raise UpdateError(
                        f"{shown}: over the download limit of {max_bytes >> 20} MiB (update_max_download_mb)"
                    )
                out.write(chunk)
                if received >= next_report:
                    logger.info("downloaded %.1f MB", received / 1e6)
                    next_report += PROGRESS_EVERY_BYTES
    except urllib.error.HTTPError as exc:
        raise UpdateError(f"{shown}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise UpdateError(f"{shown}: download failed: {reason}") from exc
    logger.info("downloaded %s (%.1f MB)", shown, received / 1e6)


def _run_selftest(engine: Engine) -> None:
    """The bundle's golden self-test (:func:`edge_runtime.trust.selftest.check_selftest`)."""
    from edge_runtime.trust.selftest import check_selftest

    try:
        report = check_selftest(engine)
    except EdgeRuntimeError as exc:
        raise UpdateError(f"self-test failed: {exc}") from exc
    logger.info("self-test: %s", report.summary())
