"""The files of a persistent subscriber: its lock and its state (what it has written).

A persistent subscriber (the default of ``edge-runtime subscribe``) keeps its broker session
under a client id that stays the same from one start to the next
(:meth:`SubscribeOptions.derived_client_id`, or the one given). Two live processes under one
id would take the session from each other, and two writing one output would mix their lines and
their state, so :meth:`SessionFiles.open` takes a lock (``fcntl.flock``, released when the
process ends however it ends) and refuses a second one with one line. The state file holds the
tracker's :meth:`~edge_runtime.cloud.tracker.StreamTracker.state`, written atomically (a
temporary file, fsync, rename) after each batch is written and before it is acknowledged.

Where: beside a file output (``results.jsonl.lock``, ``results.jsonl.state.json``); for
stdout in the state directory (``state_dir``, default ``$XDG_STATE_HOME/edge-runtime/subscribe``),
named after the client id and the broker (``<client id>@<host>_<port>.lock``).

Example::

    with SessionFiles.open(options, client_id) as files:     # ConfigError: another one runs
        files.resume(tracker)                                 # from the last run's state
        ...
        files.save(tracker, sync=True)                        # OutputError names the file
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import stat
from pathlib import Path
from types import TracebackType

from edge_runtime.cloud.options import SubscribeOptions
from edge_runtime.cloud.tracker import StreamTracker
from edge_runtime.cloud.writers import OutputError
from edge_runtime.errors import ConfigError
from edge_runtime.settings.run import default_state_dir

#: Subfolder of the default state directory (``edge-runtime run`` owns the rest of it).
STATE_SUBDIR = "subscribe"


def state_dir(options: SubscribeOptions) -> Path:
    """Where a subscriber writing to stdout keeps its files."""
    return Path(options.state_dir) if options.state_dir is not None else default_state_dir() / STATE_SUBDIR


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:120] or "_"


def _regular_file(path: str) -> bool:
    """Whether ``path`` is a regular file, or nothing yet (a FIFO or device has no "beside")."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return True  # the lock file's creation says what is wrong


def session_paths(options: SubscribeOptions, client_id: str) -> tuple[Path, Path]:
    """``(lock file, state file)`` of a persistent subscriber: beside a file output, else (stdout,
    a FIFO, a device) in the state directory under the client id and the broker's address."""
    if options.output != "-" and _regular_file(options.output):
        output = Path(os.path.realpath(options.output))
        return output.with_name(output.name + ".lock"), output.with_name(output.name + ".state.json")
    cfg = options.mqtt
    base = state_dir(options) / f"{_safe(client_id)}@{_safe(cfg.host)}_{cfg.port}"
    return base.with_name(base.name + ".lock"), base.with_name(base.name + ".state.json")


class SessionFiles:
    """The lock (held from :meth:`open` to :meth:`close`) and the state file of one
    persistent subscriber."""

    def __init__(self, lock_path: Path, state_path: Path, client_id: str, lock_fd: int) -> None:
        self.lock_path = lock_path
        self.state_path = state_path
        self.client_id = client_id
        self._lock_fd: int | None = lock_fd
        self._saved = -1  # the tracker's ``changes`` when last saved

    @classmethod
    def open(cls, options: SubscribeOptions, client_id: str) -> SessionFiles:
        """Take the lock; :class:`ConfigError` (one line) when another live process holds it
        or it cannot be created."""
        lock_path, state_path = session_paths(options, client_id)
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the subscriber's lock file {str(lock_path)!r}: {exc.strerror or exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            with contextlib.suppress(OSError, ValueError, IndexError):
                holder = f" (pid {int(os.pread(fd, 32, 0).split()[0])})"
            os.close(fd)
            raise ConfigError(
                f"another subscriber{holder} is running with client id {client_id} or output {options.output!r} "
                f"(lock {str(lock_path)!r}): stop it, or give this one another --output or --instance"
            ) from None
        with contextlib.suppress(OSError):  # who holds it, for the message above (best effort: a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(lock_path, state_path, client_id, fd)

    def resume(self, tracker: StreamTracker) -> bool:
        """Load the state file into ``tracker``; False when there is none. :class:`ConfigError`
        naming the file when it cannot be read or is not a subscriber state."""
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise ConfigError(
                f"cannot read the subscriber state {str(self.state_path)!r}: {exc.strerror or exc}"
            ) from exc
        try:
            tracker.resume(json.loads(text))
        except (ValueError, AttributeError) as exc:
            raise ConfigError(
                f"subscriber state {str(self.state_path)!r} is not valid ({exc}): move it away to start afresh "
                "(de-duplication and gaps then begin anew)"
            ) from exc
        self._saved = tracker.changes
        return True

    def save(self, tracker: StreamTracker, *, sync: bool) -> None:
        """Write the tracker's state atomically (when it changed since the last save);
        :class:`OutputError` naming the file when that fails."""
        if tracker.changes == self._saved:
            return
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        text = json.dumps(tracker.state(), separators=(",", ":"))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(text.encode("utf-8"))
                while view:
                    view = view[os.write(fd, view) :]
                if sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.state_path)
            if sync:
                _sync_dir(self.state_path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise OutputError(f"cannot write the state file {str(self.state_path)!r}: {exc.strerror or exc}") from exc
        self._saved = tracker.changes

    def close(self) -> None:
        """Release the lock (the file stays: removing it would race with a new holder)."""
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> SessionFiles:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["STATE_SUBDIR", "SessionFiles", "session_paths", "state_dir"]
