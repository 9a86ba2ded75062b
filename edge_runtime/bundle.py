"""Read and verify a bundle: the directory the exporter writes and the runtime runs.

:func:`load_bundle` parses ``manifest.json`` (:mod:`edge_runtime.manifest`), checks that
every file the manifest lists exists with the recorded sha256, and that every artifact is
listed. Anything that does not check out raises :class:`BundleError` naming the file and why.

Example::

    from edge_runtime.bundle import load_bundle
    bundle = load_bundle("build/demo_bundle")
    trunk = bundle.path_of(bundle.manifest.trunk.artifact("onnx", "fp32"))

CLI: ``edge-runtime inspect build/demo_bundle``
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import BundleError
from edge_runtime.manifest import Artifact, Manifest

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"


def sha256_file(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its directory and its parsed manifest."""

    root: Path
    manifest: Manifest

    def path_of(self, artifact: Artifact | str) -> Path:
        """Absolute path of an artifact (or of a path relative to the bundle)."""
        rel = artifact.path if isinstance(artifact, Artifact) else artifact
        return self.root / rel

    def size_of(self, artifact: Artifact | str) -> int:
        """Size in bytes of an artifact's file."""
        return self.path_of(artifact).stat().st_size


def read_manifest(root: str | Path) -> Manifest:
    """Parse and validate ``root/manifest.json`` without checking file hashes."""
    root = Path(root)
    if not root.exists():
        raise BundleError(f"{root}: no such bundle directory")
    if not root.is_dir():
        raise BundleError(f"{root}: a bundle is a directory holding {MANIFEST_NAME}")
    path = root / MANIFEST_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing: {root} is not a bundle") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not a readable JSON manifest: {exc}") from None
    return Manifest.from_mapping(data, str(path))


def load_bundle(root: str | Path, *, verify_hashes: bool = True) -> Bundle:
    """Read ``manifest.json`` under ``root`` and verify every listed file.

    Raises :class:`BundleError` when the manifest is malformed, an artifact is not listed in
    ``files``, or a listed file is missing or its sha256 differs.
    """
    root = Path(root)
    manifest = read_manifest(root)
    where = root / MANIFEST_NAME
    for graph_name, entry in manifest.graphs().items():
        for artifact in entry.artifacts:
            if artifact.path not in manifest.files:
                raise BundleError(
                    f"{where}: {graph_name} artifact {artifact.path!r} is not listed in 'files' (no checksum)"
                )
    if verify_hashes:
        for rel, expected in manifest.files.items():
            path = root / rel
            if not path.is_file():
                raise BundleError(f"{path}: listed in {MANIFEST_NAME} but missing from the bundle")
            actual = sha256_file(path)
            if actual != expected:
                raise BundleError(
                    f"{path}: checksum mismatch (manifest {expected[:19]}…, file {actual[:19]}…): "
                    "the file was changed or corrupted after export"
                )
    return Bundle(root=root, manifest=manifest)
