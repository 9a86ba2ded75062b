"""Sign a bundle: ``manifest.sig`` = base64 of the raw ed25519 signature over ``manifest.json``.

The manifest lists the sha256 of every file, so signing its exact bytes covers the whole
bundle. The bundle's hashes are checked before signing, so a corrupted bundle
is never vouched for. Rewriting a bundle (``quantize``, ``convert``) drops the signature:
sign it again afterwards.

Example::

    from edge_runtime.trust.keys import generate_keypair
    from exporter.signing import sign_bundle
    private, public = generate_keypair("release")          # release.key, release.pub
    sig_path = sign_bundle("build/demo_bundle", private)   # build/demo_bundle/manifest.sig

CLI: ``edge-export keygen release`` then ``edge-export sign build/demo_bundle --key release.key``
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.bundle.reader import MANIFEST_NAME, SIGNATURE_NAME, load_bundle, unlisted_files
from edge_runtime.errors import BundleError
from edge_runtime.trust.keys import encode_signature, load_private_key, public_key_of, sign

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignResult:
    """What :func:`sign_result` wrote: the signature file and the id of the signing key."""

    path: Path
    key_id: str


def sign_result(bundle_dir: str | Path, private_key_path: str | Path) -> SignResult:
    """Check the bundle's hashes, sign the exact bytes of its ``manifest.json`` and write
    ``manifest.sig`` atomically; return its path and the key id."""
    root = Path(bundle_dir)
    private_key = load_private_key(private_key_path)
    bundle = load_bundle(root, warn_unchecked=False)  # schema + sha256 of every listed file
    extra = unlisted_files(root, bundle.manifest)
    if extra:
        names = ", ".join(str(p.relative_to(root)) for p in extra[:5]) + (" ..." if len(extra) > 5 else "")
        raise BundleError(
            f"{root}: holds files its manifest does not list ({names}); devices refuse a signed bundle with "
            "unlisted files: remove them before signing"
        )
    manifest_bytes = (root / MANIFEST_NAME).read_bytes()
    signature = sign(private_key, manifest_bytes)
    public = public_key_of(private_key, str(private_key_path))
    target = root / SIGNATURE_NAME
    fd, tmp = tempfile.mkstemp(prefix=f".{SIGNATURE_NAME}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(encode_signature(signature) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("%s: signed by %s", target, public.key_id)
    return SignResult(path=target, key_id=public.key_id)


def sign_bundle(bundle_dir: str | Path, private_key_path: str | Path) -> Path:
    """Sign the bundle at ``bundle_dir`` with the PKCS#8 PEM private key; return ``manifest.sig``'s path.

    Raises :class:`~edge_runtime.errors.BundleError` when the bundle does not check out and
    :class:`~edge_runtime.trust.keys.KeyFileError` when the key is missing or not a private key.
    """
    return sign_result(bundle_dir, private_key_path).path


__all__ = ["SignResult", "sign_bundle", "sign_result"]
