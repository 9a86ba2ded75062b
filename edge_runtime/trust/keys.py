"""ed25519 keys and raw signatures: the one primitive behind signed bundles and signed commands.

File formats: a private key is PKCS#8 PEM (``PREFIX.key``), a public key is
SubjectPublicKeyInfo PEM (``PREFIX.pub``); a signature is the raw 64-byte ed25519 signature,
base64-encoded wherever it travels as text (``manifest.sig``, a command's ``sig`` field).

``cryptography`` is the optional ``signing`` extra: it is imported when a key is first used, and
its absence is a :class:`KeyFileError` that says what to install.

Example::

    from edge_runtime.trust.keys import load_private_key, load_public_keys, sign, verify
    private = load_private_key("operator.key")
    sig = sign(private, b"hello")
    keys = load_public_keys(["operator.pub", "old-operator.pub"])
    key_id = verify(keys, b"hello", sig)   # the id of the key that signed it, or None
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeRuntimeError

SIGNATURE_BYTES = 64
INSTALL_HINT = "pip install 'edge-runtime[signing]'"


class KeyFileError(EdgeRuntimeError):
    """A key file is missing, unreadable, of the wrong kind, or ``cryptography`` is absent."""


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:
        raise KeyFileError(f"ed25519 signatures need the 'cryptography' package: {INSTALL_HINT}") from exc
    return ed25519


def _serialization() -> Any:
    _ed25519()
    from cryptography.hazmat.primitives import serialization

    return serialization


@dataclass(frozen=True)
class PublicKey:
    """A trusted ed25519 public key with where it came from and a short id for messages.

    ``key_id``: the first 16 hex digits of sha256 over the 32 raw public-key bytes.
    """

    key: Any
    key_id: str
    source: str


def _key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_from_pem(data: bytes, source: str) -> PublicKey:
    """Parse a PEM public key; :class:`KeyFileError` names ``source`` when it is not ed25519."""
    ed25519 = _ed25519()
    serialization = _serialization()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        hint = " (this is a PRIVATE key: give the .pub file)" if b"PRIVATE KEY" in data else ""
        raise KeyFileError(f"{source}: not a PEM public key{hint}: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"{source}: a {type(key).__name__}, not an ed25519 public key")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(key=key, key_id=_key_id(raw), source=source)


def load_public_keys(paths: Iterable[str | Path]) -> list[PublicKey]:
    """Read every PEM public key in ``paths`` (several keys allow rotation)."""
    keys = []
    for path in paths:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot read the public key: {exc.strerror or exc}") from exc
        keys.append(public_key_from_pem(data, str(path)))
    return keys


def load_private_key(path: str | Path) -> Any:
    """Read a PKCS#8 PEM ed25519 private key (unencrypted) written by ``edge-export keygen``."""
    ed25519 = _ed25519()
    serialization = _serialization()
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the private key: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        hint = " (this is a PUBLIC key: give the .key file)" if b"PUBLIC KEY" in data else ""
        raise KeyFileError(f"{path}: not an unencrypted PEM private key{hint}: {exc}") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"{path}: a {type(key).__name__}, not an ed25519 private key")
    return key


def generate_keypair(prefix: str | Path, *, force: bool = False) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (PKCS#8 PEM, mode 0600) and ``PREFIX.pub`` (PEM); return both paths.

    Refuses to overwrite an existing key unless ``force``. A missing parent folder is created
    (mode 0700: it holds a private key), like ``mkdir -p``.
    """
    ed25519 = _ed25519()
    serialization = _serialization()
    prefix = Path(prefix)
    private_path = prefix.with_name(prefix.name + ".key")
    public_path = prefix.with_name(prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() and not force:
            raise KeyFileError(f"{path}: exists; refusing to overwrite a key (use --force)")
    try:
        prefix.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(
            f"{prefix.parent}: cannot create the folder for the key files: {exc.strerror or exc}"
        ) from exc
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if force:
        private_path.unlink(missing_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def public_key_of(private_key: Any, source: str = "private key") -> PublicKey:
    """The :class:`PublicKey` matching a private key (for its id)."""
    serialization = _serialization()
    public = private_key.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PublicKey(key=public, key_id=_key_id(raw), source=source)


def sign(private_key: Any, message: bytes) -> bytes:
    """The raw 64-byte ed25519 signature of ``message``."""
    return bytes(private_key.sign(message))


def encode_signature(signature: bytes) -> str:
    """Base64 text of a raw signature (what ``manifest.sig`` and commands carry)."""
    return base64.b64encode(signature).decode("ascii")


def decode_signature(text: str | bytes, source: str) -> bytes:
    """Raw signature bytes from base64 text; :class:`KeyFileError` naming ``source`` when malformed."""
    if isinstance(text, bytes):
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError as exc:
            raise KeyFileError(f"{source}: the signature is not base64 text") from exc
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"{source}: the signature is not valid base64") from exc
    if len(raw) != SIGNATURE_BYTES:
        raise KeyFileError(f"{source}: the signature has {len(raw)} bytes, an ed25519 signature has {SIGNATURE_BYTES}")
    return raw


def verify(keys: Sequence[PublicKey], message: bytes, signature: bytes) -> PublicKey | None:
    """The first key of ``keys`` under which ``signature`` over ``message`` is valid, else None."""
    from cryptography.exceptions import InvalidSignature

    for candidate in keys:
        try:
            candidate.key.verify(signature, message)
        except InvalidSignature:
            continue
        return candidate
    return None
