"""Write a bundle directory atomically: graphs, ``manifest.json`` and checksums.

The bundle is assembled in a temporary directory beside the target and moved into place
only when complete, so an interrupted or failed export never leaves a half-written bundle.
An existing non-empty target is replaced only when ``force`` is true. A command that writes a
bundle in several steps (split, then its self-test data; the export chain) works in
:func:`staged_output` and the target appears only when every step succeeded. Commands that change a
bundle (quantize, convert, the self-test data) write it again with :func:`rewrite_bundle`, or
:func:`rewrite_artifacts` when they replace graphs' artifacts.

Example::

    path = write_bundle("build/demo_bundle", files={"trunk.fp32.onnx": trunk_bytes, ...},
                        manifest=manifest, force=True)
    rewrite_artifacts(bundle, "build/demo_int8", replaced=lambda a: a.precision == "int8",
                      added={"trunk": [int8_trunk]}, files={"trunk.int8.onnx": data})
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from edge_runtime.bundle.fields import check_bundle_path
from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.reader import MANIFEST_NAME, SIGNATURE_NAME, Bundle, sha256_file
from edge_runtime.bundle.specs import Artifact, GraphEntry
from edge_runtime.errors import ConfigError

logger = logging.getLogger(__name__)


def check_output_dir(out_dir: str | Path, force: bool) -> Path:
    """Refuse an output path that is a file, or a non-empty directory without ``force``, or
    one that cannot be written: below a file, or below a directory that is not writable (its
    permissions, a read-only file system), before any work is done."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"{out}: directory exists and is not empty; use --force to replace it")
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{out}: cannot write there: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(
            f"{out}: cannot write there: {ancestor} is not writable (permissions or a read-only file system)"
        )
    return out


def _work_dir(out: Path, prefix: str) -> Path:
    """A fresh directory beside ``out`` (its parents made); a ConfigError naming ``out`` and why
    when that cannot be done (a file in the way, no permission, a read-only file system)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.{prefix}-", dir=out.parent))
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(out) else ""
        why = "a file is in the way" if isinstance(exc, (FileExistsError, NotADirectoryError)) else exc.strerror
        raise ConfigError(f"{out}: cannot write there: {why or exc}{where}") from None


def write_bundle(out_dir: str | Path, files: Mapping[str, bytes], manifest: Manifest, *, force: bool = False) -> Path:
    """Write ``files`` (relative path → bytes) and the manifest with their sha256 and size; return the path."""
    out = check_output_dir(out_dir, force).resolve()
    staging = _work_dir(out, "tmp")
    try:
        digests: dict[str, str] = {}
        sizes: dict[str, int] = {}
        for rel, data in files.items():
            check_bundle_path(rel, "file name", str(out), ConfigError)
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            digests[rel] = sha256_file(target)
            sizes[rel] = len(data)
        final = replace(manifest, files=digests, file_sizes=sizes)
        (staging / MANIFEST_NAME).write_text(json.dumps(final.to_dict(), indent=2) + "\n", encoding="utf-8")
        move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.debug("wrote bundle %s", out)
    return out


def move_into_place(staging: Path, out: Path) -> None:
    """Rename the complete directory ``staging`` to ``out`` (same parent), replacing ``out``."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_output(out_dir: str | Path, force: bool) -> Iterator[Path]:
    """A fresh directory path beside ``out_dir`` to build a bundle in, in as many steps as it
    takes; when the ``with`` block ends without an exception the bundle found there replaces
    ``out_dir``, otherwise it is removed and ``out_dir`` is left as it was (nothing appears)."""
    out = check_output_dir(out_dir, force).resolve()
    work = _work_dir(out, "stage")
    try:
        bundle = work / "bundle"
        yield bundle
        if not bundle.is_dir():
            raise ConfigError(f"{out}: nothing was written")  # a programming error in the caller
        move_into_place(bundle, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def rewrite_target(bundle_dir: str | Path, out_dir: str | Path | None, force: bool) -> tuple[Path, Path, bool]:
    """``(source, target, in_place)`` for a command that rewrites a bundle (quantize, convert):
    ``out_dir`` None means the bundle itself (replaced atomically); another folder is checked
    with :func:`check_output_dir` first."""
    source = Path(bundle_dir)
    target = source if out_dir is None else Path(out_dir)
    in_place = target.resolve() == source.resolve()
    if not in_place:
        check_output_dir(target, force)
    return source, target, in_place


def warn_signature_dropped(source: Path, command: str) -> None:
    """Say so when ``command`` (quantize, convert) rewrites a signed bundle: the new manifest
    has no signature until it is signed again."""
    if (source / SIGNATURE_NAME).is_file():
        logger.warning(
            "%s: the signature (%s) is dropped: %s changes the manifest; sign the new bundle again "
            "(edge-export sign BUNDLE_DIR --key PRIVATE_KEY)",
            source, SIGNATURE_NAME, command,
        )  # fmt: skip


def existing_files(bundle: Bundle, drop: Collection[str] = ()) -> dict[str, bytes]:
    """Every file the manifest of ``bundle`` lists (relative path -> bytes), except the manifest,
    its signature (a rewritten manifest invalidates it) and ``drop``: what to hand back to
    :func:`write_bundle` when rewriting a bundle."""
    files: dict[str, bytes] = {}
    for rel in bundle.manifest.files:
        if rel in drop or rel in (MANIFEST_NAME, SIGNATURE_NAME):
            continue
        files[rel] = (bundle.root / rel).read_bytes()
    return files


def rewrite_bundle(
    bundle: Bundle,
    target: str | Path,
    manifest: Manifest,
    files: Mapping[str, bytes],
    *,
    drop: Collection[str] = (),
    force: bool = False,
) -> Path:
    """Write ``bundle`` again, to ``target``, with ``manifest``: every file it lists except
    ``drop`` (see :func:`existing_files`), and ``files`` (new ones, or replacing those of the
    same name); return the path."""
    kept = existing_files(bundle, {*drop, *files})
    kept.update(files)
    return write_bundle(target, kept, manifest, force=force)


def rewrite_artifacts(
    bundle: Bundle,
    target: str | Path,
    *,
    replaced: Callable[[Artifact], bool],
    added: Mapping[str, Sequence[Artifact]],
    files: Mapping[str, bytes],
    force: bool = False,
) -> Path:
    """Write ``bundle`` again with, on every graph, the artifacts ``replaced`` selects taken
    out (their files too) and ``added[graph]`` (``"trunk"`` or a head's name) appended;
    ``files`` are the added artifacts' files and any report. See :func:`rewrite_bundle`."""
    stale: set[str] = set()

    def update(graph: str, entry: GraphEntry) -> GraphEntry:
        stale.update(a.path for a in entry.artifacts if replaced(a))
        kept = [a for a in entry.artifacts if not replaced(a)]
        return replace(entry, artifacts=(*kept, *added.get(graph, ())))

    manifest = bundle.manifest
    manifest = replace(
        manifest,
        trunk=update("trunk", manifest.trunk),
        heads={name: update(name, entry) for name, entry in manifest.heads.items()},
    )
    return rewrite_bundle(bundle, target, manifest, files, drop=stale, force=force)
