"""Signed bundles on the device: check ``manifest.sig`` against the trusted public keys.

A bundle's signature is ``manifest.sig``: base64 of the raw ed25519 signature
over the exact bytes of ``manifest.json``. The manifest lists the sha256 of every file, so a
valid signature followed by the hash check (:func:`edge_runtime.bundle.reader.load_bundle`) vouches
for the whole bundle. Several trusted keys allow rotation: any one of them may have signed.

Example::

    from edge_runtime.trust.keys import load_public_keys
    from edge_runtime.bundle.reader import load_bundle
    keys = load_public_keys(["/etc/edge-runtime/release.pub"])
    bundle = load_bundle("/opt/bundles/current", trusted_keys=keys)
    print(bundle.signed_by)                     # the key id that signed it

CLI: ``edge-runtime inspect BUNDLE --trusted-key release.pub``;
``edge-runtime run ... --trusted-key release.pub`` (config key ``trusted_keys``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edge_runtime.errors import BundleError
from edge_runtime.trust.keys import KeyFileError, PublicKey, decode_signature, verify

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.sig"


class SignatureError(BundleError):
    """A bundle is unsigned, its ``manifest.sig`` is malformed, or no trusted key signed it."""


#: The largest ``manifest.sig`` read (base64 of 64 bytes is 88 characters).
MAX_SIGNATURE_BYTES = 1024


def read_signature(root: Path) -> bytes | None:
    """The raw signature in ``root/manifest.sig``; None when there is none.

    Raises :class:`SignatureError` when the file is not base64 of a 64-byte signature.
    """
    path = root / SIGNATURE_NAME
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SignatureError(f"{root}: cannot read {SIGNATURE_NAME}: {exc.strerror or exc}") from exc
    return parse_signature(text, root)


def parse_signature(text: bytes, where: Path | str) -> bytes:
    """The raw signature in the bytes of a ``manifest.sig`` of the bundle or package ``where``;
    :class:`SignatureError` when they are not base64 of a 64-byte signature."""
    if len(text) > MAX_SIGNATURE_BYTES:
        raise SignatureError(f"{where}: malformed {SIGNATURE_NAME}: over {MAX_SIGNATURE_BYTES} bytes")
    try:
        return decode_signature(text, f"{where}/{SIGNATURE_NAME}")
    except KeyFileError as exc:
        raise SignatureError(f"{where}: malformed {SIGNATURE_NAME}: {exc}") from exc


def check_manifest_signature(
    manifest_bytes: bytes, signature: bytes | None, keys: Sequence[PublicKey], where: Path | str
) -> PublicKey:
    """The trusted key whose ``signature`` (raw, None: the bundle has no ``manifest.sig``) is
    over ``manifest_bytes``. Raises :class:`SignatureError` naming ``where`` (the bundle or the
    update package) and the reason: no key given, unsigned, or no trusted key matches."""
    if not keys:
        raise SignatureError(f"{where}: no trusted key given to check the signature against")
    if signature is None:
        raise SignatureError(
            f"{where}: unsigned: no {SIGNATURE_NAME} (sign it with: edge-export sign {where} --key PRIVATE_KEY)"
        )
    key = verify(keys, manifest_bytes, signature)
    if key is None:
        trusted = ", ".join(f"{k.key_id} ({k.source})" for k in keys)
        raise SignatureError(
            f"{where}: {SIGNATURE_NAME}: signature does not match any trusted key (trusted: {trusted}); "
            f"the manifest was changed after signing, or another key signed it"
        )
    return key


def verify_bundle_signature(root: Path, keys: Sequence[PublicKey], manifest_bytes: bytes | None = None) -> PublicKey:
    """The trusted key whose signature ``root/manifest.sig`` is over ``manifest.json``'s bytes.

    ``manifest_bytes``: the bytes already read (so that the caller parses exactly what was
    verified); None reads ``root/manifest.json``. Raises :class:`SignatureError` naming the
    bundle and the reason: unsigned, malformed signature, or no trusted key matches.
    """
    root = Path(root)
    if not keys:
        raise SignatureError(f"{root}: no trusted key given to check the signature against")
    signature = read_signature(root)
    if signature is not None and manifest_bytes is None:
        try:
            manifest_bytes = (root / MANIFEST_NAME).read_bytes()
        except OSError as exc:
            raise SignatureError(f"{root / MANIFEST_NAME}: cannot read: {exc.strerror or exc}") from exc
    return check_manifest_signature(manifest_bytes or b"", signature, keys, root)


def signature_state(root: Path, signed_by: str | None) -> str:
    """One line for ``inspect`` / ``--validate``: verified, present but not checked, or unsigned."""
    if signed_by is not None:
        return f"signed by {signed_by} (verified)"
    if (Path(root) / SIGNATURE_NAME).is_file():
        return "present, not checked (no --trusted-key)"
    return "unsigned"


__all__ = [
    "MAX_SIGNATURE_BYTES",
    "SIGNATURE_NAME",
    "SignatureError",
    "check_manifest_signature",
    "parse_signature",
    "read_signature",
    "signature_state",
    "verify_bundle_signature",
]
