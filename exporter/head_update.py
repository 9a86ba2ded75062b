"""Head-only update packages: only what changed between two versions of a bundle.

A head update keeps the trunk (the large graph) on the device: the package holds the new
``manifest.json``, its ``manifest.sig`` (when signed) and every file whose sha256 differs from the
base bundle's. ``edge-runtime update`` completes it from the running bundle, checking that each
file it takes has the sha256 the new manifest records.

Example::

    result = write_head_update("build/demo_v2", base="build/demo_v1", output="demo-v2-heads.tar.gz")
    print(result.included, result.kept_out, result.size)

CLI: ``edge-export head-update build/demo_v2 --base build/demo_v1 -o demo-v2-heads.tar.gz``
"""

from __future__ import annotations

import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.bundle.reader import MANIFEST_NAME, SIGNATURE_NAME, load_bundle, read_manifest
from edge_runtime.errors import BundleError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadUpdateResult:
    """What :func:`write_head_update` wrote: the tarball, its members, the files left to the base
    (with their sizes in bytes) and the tarball's size in bytes."""

    path: Path
    included: tuple[str, ...]
    kept_out: tuple[tuple[str, int], ...]
    size: int


def write_head_update(bundle: str | Path, *, base: str | Path, output: str | Path) -> HeadUpdateResult:
    """Write a ``.tar.gz`` with the manifest, its signature and the files of ``bundle`` whose
    sha256 differs from (or is absent in) ``base``'s manifest. Both bundles are verified first."""
    bundle, base, output = Path(bundle), Path(base), Path(output)
    new = load_bundle(bundle).manifest
    old = read_manifest(base)
    load_bundle(base)
    if new.input != old.input:
        logger.warning("the input spec changed between %s and %s", base, bundle)
    changed = [rel for rel, digest in new.files.items() if old.files.get(rel) != digest]
    kept_out = tuple((rel, (bundle / rel).stat().st_size) for rel in new.files if rel not in changed)
    members = [MANIFEST_NAME] + ([SIGNATURE_NAME] if (bundle / SIGNATURE_NAME).is_file() else []) + changed
    if not changed:
        raise BundleError(f"{bundle}: every file is the same as in {base}: nothing to update but the manifest")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        for rel in members:
            tar.add(bundle / rel, arcname=rel, recursive=False)
    tmp.replace(output)
    return HeadUpdateResult(output, tuple(members), kept_out, output.stat().st_size)
