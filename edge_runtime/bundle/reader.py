"""Read and verify a bundle: the directory the exporter writes and the runtime runs.

:func:`load_bundle` parses ``manifest.json`` (:mod:`edge_runtime.bundle.manifest`), checks that
every file the manifest lists exists with the recorded sha256, and that every artifact is
listed. Anything that does not check out raises :class:`BundleError` naming the file and why.

With ``trusted_keys`` it first checks ``manifest.sig`` (:mod:`edge_runtime.trust.signatures`) over the exact
bytes of ``manifest.json``, then parses those same bytes and checks the hashes, which the
signed manifest covers; only listed files are ever loaded.

Example::

    from edge_runtime.bundle.reader import load_bundle
    bundle = load_bundle("build/demo_bundle")
    trunk = bundle.path_of(bundle.manifest.trunk.artifact("onnx", "fp32"))
    signed = load_bundle("build/demo_bundle", trusted_keys=load_public_keys(["release.pub"]))

CLI: ``edge-runtime inspect build/demo_bundle``
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.bounded_json import loads_bounded
from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.specs import Artifact
from edge_runtime.errors import BundleError
from edge_runtime.trust.keys import PublicKey
from edge_runtime.trust.signatures import SignatureError, verify_bundle_signature

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"
#: The largest ``manifest.json`` read (real ones are a few KiB): an update reads it into memory
#: before anything else.
MAX_MANIFEST_BYTES = 4 << 20

_warned_unchecked = False


def sha256_file(path: Path) -> str:
    """``"sha256:<hex>"`` of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk: its directory and its parsed manifest.

    ``signed_by``: the id of the trusted key whose signature was verified; None when the
    signature was not checked (no trusted key given).
    """

    root: Path
    manifest: Manifest
    signed_by: str | None = None

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
    return parse_manifest(read_manifest_bytes(root), root / MANIFEST_NAME)


def read_manifest_bytes(root: Path) -> bytes:
    """The exact bytes of ``root/manifest.json`` (what a signature covers)."""
    if not root.exists():
        raise BundleError(f"{root}: no such bundle directory")
    if not root.is_dir():
        raise BundleError(f"{root}: a bundle is a directory holding {MANIFEST_NAME}")
    path = root / MANIFEST_NAME
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError as exc:
        raise BundleError(f"{path}: missing: {root} is not a bundle") from exc
    except OSError as exc:
        raise BundleError(f"{path}: not a readable JSON manifest: {exc}") from exc
    check_manifest_size(data, path)
    return data


def check_manifest_size(data: bytes, path: Path | str) -> None:
    """Refuse a manifest over :data:`MAX_MANIFEST_BYTES` (read no more than one byte past it)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(f"{path}: over the manifest size limit of {MAX_MANIFEST_BYTES >> 20} MiB")


def parse_manifest(data: bytes, path: Path) -> Manifest:
    """Validate the manifest in ``data`` (read from ``path``, named in errors)."""
    check_manifest_size(data, path)
    try:
        parsed = loads_bounded(data)
    except ValueError as exc:  # bad UTF-8, bad JSON, nested too deeply
        raise BundleError(f"{path}: not a readable JSON manifest: {exc}") from exc
    return Manifest.from_mapping(parsed, str(path))


def unlisted_files(root: Path, manifest: Manifest) -> list[Path]:
    """Files (and symlinks) under ``root`` that ``manifest.files`` does not list, other than the
    manifest and its signature."""
    listed = {*manifest.files, MANIFEST_NAME, SIGNATURE_NAME}
    return [
        path
        for path in sorted(root.rglob("*"))
        if path.is_symlink() or (path.is_file() and path.relative_to(root).as_posix() not in listed)
    ]


def _refuse_unlisted(root: Path, manifest: Manifest) -> None:
    """A signed bundle holds only what its manifest lists: ONNX Runtime would load an unlisted
    file next to a graph as the graph's external data, unhashed and unsigned."""
    extra = unlisted_files(root, manifest)
    if extra:
        raise SignatureError(
            f"{extra[0]}: not listed in the signed {MANIFEST_NAME}: a signed bundle may hold only the files "
            "its manifest covers (remove it, or export and sign the bundle again)"
        )


def silence_unchecked_warning() -> None:
    """Turn off the "not signature-checked" warning for this process: for tools that write,
    sign or self-test bundles rather than run them on a device (``edge-export``)."""
    global _warned_unchecked
    _warned_unchecked = True


def load_bundle(
    root: str | Path,
    *,
    verify_hashes: bool = True,
    trusted_keys: Sequence[PublicKey] | None = None,
    warn_unchecked: bool = True,
) -> Bundle:
    """Read ``manifest.json`` under ``root`` and verify every listed file.

    With ``trusted_keys`` (non-empty), the signature in ``manifest.sig`` over the exact bytes of
    ``manifest.json`` is checked first (:class:`~edge_runtime.trust.signatures.SignatureError` when the
    bundle is unsigned, the signature malformed or made by no trusted key), and the manifest
    parsed is the one that was verified. Without them nothing is signature-checked, and a
    warning says so once per process (``warn_unchecked=False``: tools that only rewrite or
    sign a bundle).

    Raises :class:`BundleError` when the manifest is malformed, an artifact is not listed in
    ``files``, or a listed file is missing or its sha256 differs.
    """
    global _warned_unchecked
    root = Path(root)
    data = read_manifest_bytes(root)
    signed_by = None
    if trusted_keys:
        signed_by = verify_bundle_signature(root, trusted_keys, data).key_id
        logger.info("%s: signature verified: signed by %s", root, signed_by)
    elif warn_unchecked and not _warned_unchecked:
        _warned_unchecked = True
        logger.warning(
            "bundle %s is not signature-checked: no trusted key configured (trusted_keys / --trusted-key)", root
        )
    manifest = parse_manifest(data, root / MANIFEST_NAME)
    where = root / MANIFEST_NAME
    for graph_name, entry in manifest.graphs().items():
        for artifact in entry.artifacts:
            if artifact.path not in manifest.files:
                raise BundleError(
                    f"{where}: {graph_name} artifact {artifact.path!r} is not listed in 'files' (no checksum)"
                )
    if signed_by is not None:
        _refuse_unlisted(root, manifest)
    if verify_hashes:
        for rel, expected in manifest.files.items():
            path = root / rel
            if not path.is_file():
                raise BundleError(f"{path}: listed in {MANIFEST_NAME} but missing from the bundle")
            size = manifest.file_sizes.get(rel)
            if size is not None and path.stat().st_size != size:
                raise BundleError(
                    f"{path}: checksum mismatch (manifest {size} bytes, file {path.stat().st_size} bytes): "
                    "the file was changed or corrupted after export"
                )
            actual = sha256_file(path)
            if actual != expected:
                raise BundleError(
                    f"{path}: checksum mismatch (manifest {expected[:19]}…, file {actual[:19]}…): "
                    "the file was changed or corrupted after export"
                )
    return Bundle(root=root, manifest=manifest, signed_by=signed_by)
