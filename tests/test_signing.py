"""Signed bundles with real ed25519 keys and the real demo bundle: keygen, sign, verify in
``load_bundle`` / ``Engine.from_bundle`` / the daemon, key rotation, every way a signature
fails, and the ``edge-export keygen|sign`` / ``edge-runtime run|inspect --trusted-key`` CLIs."""

from __future__ import annotations

import base64
import logging
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cryptography", reason="signing needs the [signing] extra (cryptography)")

from edge_runtime.bundle import reader as bundle_module
from edge_runtime.bundle.reader import load_bundle
from edge_runtime.config import RuntimeConfig
from edge_runtime.daemon.pipeline import Daemon
from edge_runtime.daemon.validation import validate
from edge_runtime.errors import BundleError, ConfigError
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.trust.keys import KeyFileError, PublicKey, generate_keypair, load_public_keys
from edge_runtime.trust.signatures import SignatureError
from exporter.signing import sign_bundle

EXPORT = [sys.executable, "-m", "exporter.cli"]
RUNTIME = [sys.executable, "-m", "edge_runtime.cli"]


def run(command: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """Three key pairs: ``old``, ``new`` (rotation) and ``other`` (not trusted)."""
    folder = tmp_path_factory.mktemp("keys")
    return {name: generate_keypair(folder / name) for name in ("old", "new", "other")}


def pub(keys: dict[str, tuple[Path, Path]], *names: str) -> list[PublicKey]:
    return load_public_keys([keys[n][1] for n in names])


@pytest.fixture
def bundle(demo_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the demo bundle, unsigned."""
    return Path(shutil.copytree(demo_bundle, tmp_path / "bundle"))


@pytest.fixture
def signed(bundle: Path, keys: dict[str, tuple[Path, Path]]) -> Path:
    """The copy, signed with the ``new`` key."""
    sign_bundle(bundle, keys["new"][0])
    return bundle


# -- keygen -------------------------------------------------------------------------------


def test_keygen_writes_pkcs8_private_0600_and_pem_public(tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "release")
    assert (private.name, public.name) == ("release.key", "release.pub")
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8
    assert public.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match=r"release\.key: exists; refusing to overwrite"):
        generate_keypair(tmp_path / "release")
    before = private.read_bytes()
    generate_keypair(tmp_path / "release", force=True)
    assert private.read_bytes() != before


def test_keygen_creates_missing_key_folders(tmp_path: Path) -> None:
    """``edge-export keygen keys/release`` works in a checkout without ``keys/`` (the README's line)."""
    private, public = generate_keypair(tmp_path / "keys" / "ops" / "release")
    assert private == tmp_path / "keys" / "ops" / "release.key" and public.exists()
    assert stat.S_IMODE((tmp_path / "keys" / "ops").stat().st_mode) == 0o700
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    done = run(EXPORT, "keygen", "new/release", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "new" / "release.key").exists() and (tmp_path / "new" / "release.pub").exists()
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(KeyFileError, match=r"cannot create the folder for the key files"):
        generate_keypair(tmp_path / "file" / "release")


# -- sign and verify ------------------------------------------------------------------------


def test_sign_then_load_with_the_key(signed: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    sig = (signed / "manifest.sig").read_text().strip()
    assert len(base64.b64decode(sig, validate=True)) == 64
    trusted = pub(keys, "new")
    loaded = load_bundle(signed, trusted_keys=trusted)
    assert loaded.signed_by == trusted[0].key_id
    assert load_bundle(signed).signed_by is None  # not checked without keys
    assert not [p for p in signed.iterdir() if p.name.startswith(".manifest.sig")]  # no temp file left


def test_engine_checks_the_signature_and_runs_a_frame(signed: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    options = EngineOptions(threads=1, trusted_keys=tuple(pub(keys, "new")))
    with Engine.from_bundle(signed, options) as engine:
        assert engine.bundle.signed_by == options.trusted_keys[0].key_id  # type: ignore[index]
        result = engine.infer(np.zeros((96, 128, 3), np.uint8))
        assert result.results
    with pytest.raises(SignatureError, match="does not match any trusted key"):
        Engine.from_bundle(signed, EngineOptions(trusted_keys=tuple(pub(keys, "other"))))


def test_key_rotation_accepts_either_trusted_key(signed: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    trusted = pub(keys, "old", "new")
    assert load_bundle(signed, trusted_keys=trusted).signed_by == trusted[1].key_id
    sign_bundle(signed, keys["old"][0])  # re-signing replaces the signature
    assert load_bundle(signed, trusted_keys=trusted).signed_by == trusted[0].key_id


def _flip_manifest_byte(root: Path) -> None:
    data = bytearray((root / "manifest.json").read_bytes())
    i = data.index(b'"version"') + 1
    data[i] = ord("V")  # one byte: the signature is checked before the manifest is parsed
    (root / "manifest.json").write_bytes(bytes(data))


def _tamper_model(root: Path) -> None:
    path = root / "trunk.fp32.onnx"
    path.write_bytes(path.read_bytes() + b"\0")


def _write_sig(text: bytes) -> Callable[[Path], None]:
    return lambda root: (root / "manifest.sig").write_bytes(text)


FAILURES = [
    pytest.param(
        lambda root: None, ["other"], SignatureError, r"does not match any trusted key \(trusted: ", id="wrong-key"
    ),
    pytest.param(_flip_manifest_byte, ["new"], SignatureError, "does not match any trusted key", id="manifest-byte"),
    pytest.param(
        lambda root: (root / "manifest.sig").unlink(),
        ["new"],
        SignatureError,
        r"unsigned: no manifest\.sig \(sign it with: edge-export sign",
        id="missing-sig",
    ),
    pytest.param(
        _write_sig(b"not base64!!\n"),
        ["new"],
        SignatureError,
        "malformed manifest.sig: .*not valid base64",
        id="bad-base64",
    ),
    pytest.param(
        _write_sig(base64.b64encode(b"x" * 63)),
        ["new"],
        SignatureError,
        "malformed manifest.sig: .*63 bytes",
        id="short-sig",
    ),
    pytest.param(
        _write_sig(b"\xff\xfe"), ["new"], SignatureError, "malformed manifest.sig: .*not base64 text", id="binary-sig"
    ),
    pytest.param(_tamper_model, ["new"], BundleError, r"trunk\.fp32\.onnx: checksum mismatch", id="tampered-model"),
]


@pytest.mark.parametrize(("tamper", "trusted", "error", "message"), FAILURES)
def test_signature_failures_name_the_bundle_and_the_reason(
    signed: Path,
    keys: dict[str, tuple[Path, Path]],
    tamper: Callable[[Path], None],
    trusted: list[str],
    error: type[Exception],
    message: str,
) -> None:
    tamper(signed)
    with pytest.raises(error, match=message) as caught:
        load_bundle(signed, trusted_keys=pub(keys, *trusted))
    assert str(signed) in str(caught.value)


def test_an_unlisted_artifact_cannot_sneak_in(signed: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    """A file added next to a signed manifest is refused, and listing it means changing the
    manifest, which breaks the signature."""
    (signed / "extra.onnx").write_bytes((signed / "trunk.fp32.onnx").read_bytes())
    with pytest.raises(SignatureError, match=r"extra.onnx: not listed in the signed manifest.json"):
        load_bundle(signed, trusted_keys=pub(keys, "new"))
    text = (signed / "manifest.json").read_text().replace('"trunk.fp32.onnx"', '"extra.onnx"', 1)
    (signed / "manifest.json").write_text(text)
    with pytest.raises(SignatureError, match="does not match any trusted key"):
        load_bundle(signed, trusted_keys=pub(keys, "new"))


KEY_MISTAKES = [
    pytest.param(
        lambda ks: sign_bundle(Path("."), ks["new"][1]),
        r"new\.pub: not an unencrypted PEM private key \(this is a PUBLIC key",
        id="pub-as-private",
    ),
    pytest.param(
        lambda ks: load_public_keys([ks["new"][0]]),
        r"new\.key: not a PEM public key \(this is a PRIVATE key",
        id="private-as-trusted",
    ),
    pytest.param(
        lambda ks: sign_bundle(Path("."), ks["new"][0].with_name("nope.key")),
        r"nope\.key: cannot read the private key",
        id="missing-key",
    ),
]


@pytest.mark.parametrize(("action", "message"), KEY_MISTAKES)
def test_key_mistakes_are_key_file_errors(
    keys: dict[str, tuple[Path, Path]], action: Callable[[dict[str, tuple[Path, Path]]], object], message: str
) -> None:
    with pytest.raises(KeyFileError, match=message):
        action(keys)


def test_signing_refuses_a_corrupted_bundle(bundle: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    _tamper_model(bundle)
    with pytest.raises(BundleError, match="checksum mismatch"):
        sign_bundle(bundle, keys["new"][0])
    assert not (bundle / "manifest.sig").exists()


def test_no_trusted_key_warns_once_and_loads(
    signed: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(bundle_module, "_warned_unchecked", False)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.bundle.reader"):
        assert load_bundle(signed).signed_by is None
        assert load_bundle(signed, trusted_keys=[]).signed_by is None  # empty = not configured
    warnings = [r.getMessage() for r in caplog.records if "not signature-checked" in r.getMessage()]
    assert warnings == [
        f"bundle {signed} is not signature-checked: no trusted key configured (trusted_keys / --trusted-key)"
    ]


# -- the daemon's config --------------------------------------------------------------------


def test_config_trusted_keys_from_file_env_and_flags(tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text('bundle = "b"\nsource = "synthetic"\ntrusted_keys = "a.pub"\n')
    assert RuntimeConfig.load(config_file, environ={}).trusted_keys == (Path("a.pub"),)
    config_file.write_text('bundle = "b"\nsource = "synthetic"\ntrusted_keys = ["a.pub", "b.pub"]\n')
    assert RuntimeConfig.load(config_file, environ={}).trusted_keys == (Path("a.pub"), Path("b.pub"))
    env = {"EDGE_RUNTIME_TRUSTED_KEYS": "c.pub, d.pub"}
    assert RuntimeConfig.load(config_file, environ=env).trusted_keys == (Path("c.pub"), Path("d.pub"))
    flags = {"trusted_keys": ["e.pub"]}
    assert RuntimeConfig.load(config_file, flags=flags, environ=env).trusted_keys == (Path("e.pub"),)
    config_file.write_text('bundle = "b"\nsource = "synthetic"\ntrusted_keys = [1]\n')
    with pytest.raises(ConfigError, match=r"config.toml: trusted_keys must be a path or a list of paths, got \[1\]"):
        RuntimeConfig.load(config_file, environ={})
    config_file.write_text('bundle = "b"\nsource = "synthetic"\ntrusted_key = "a.pub"\n')
    with pytest.raises(ConfigError, match="unknown key 'trusted_key' \\(did you mean 'trusted_keys'"):
        RuntimeConfig.load(config_file, environ={})


def test_daemon_loads_trusted_keys(signed: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    base = {"bundle": str(signed), "source": "synthetic", "state_dir": str(tmp_path / "state"), "max_frames": 1}
    ok = RuntimeConfig.from_mapping({**base, "trusted_keys": [str(keys["new"][1])]}, "test")
    summary = validate(ok)
    assert f"signature: signed by {pub(keys, 'new')[0].key_id} (verified)" in summary
    assert "signature: present, not checked" in validate(RuntimeConfig.from_mapping(base, "test"))
    missing = RuntimeConfig.from_mapping({**base, "trusted_keys": [str(tmp_path / "gone.pub")]}, "test")
    with pytest.raises(ConfigError, match=r"trusted_keys: .*gone\.pub: cannot read the public key"):
        Daemon(missing).build_engine()
    private = RuntimeConfig.from_mapping({**base, "trusted_keys": [str(keys["new"][0])]}, "test")
    with pytest.raises(ConfigError, match=r"trusted_keys: .*new\.key: not a PEM public key"):
        Daemon(private).build_engine()


# -- CLIs -----------------------------------------------------------------------------------


def test_export_keygen_and_sign_cli(bundle: Path, tmp_path: Path) -> None:
    done = run(EXPORT, "keygen", "release", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    key_id = load_public_keys([tmp_path / "release.pub"])[0].key_id
    assert f"key id:      {key_id}" in done.stdout
    assert "release.key" in done.stdout and "release.pub" in done.stdout and "secret" in done.stdout
    again = run(EXPORT, "keygen", "release", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith("edge-export: error: release.key: exists")
    signed = run(EXPORT, "sign", str(bundle), "--key", "release.key", cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    assert key_id in signed.stdout and str(bundle / "manifest.sig") in signed.stdout
    assert load_bundle(bundle, trusted_keys=load_public_keys([tmp_path / "release.pub"])).signed_by == key_id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["sign", "BUNDLE", "--key", "missing.key"], "missing.key: cannot read the private key", id="missing-key"
        ),
        pytest.param(
            ["sign", "BUNDLE", "--key", "k.pub"],
            "k.pub: not an unencrypted PEM private key (this is a PUBLIC key",
            id="pub-as-key",
        ),
        pytest.param(["sign", ".", "--key", "k.key"], "manifest.json: missing", id="not-a-bundle"),
        pytest.param(["sign", "BUNDLE"], "the following arguments are required: --key", id="no-key-flag"),
    ],
)
def test_export_sign_errors_are_one_line(args: list[str], message: str, bundle: Path, tmp_path: Path) -> None:
    generate_keypair(tmp_path / "k")
    done = run(EXPORT, *[str(bundle) if a == "BUNDLE" else a for a in args], cwd=tmp_path)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_runtime_run_with_a_trusted_key_refuses_an_unsigned_bundle(
    bundle: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    args = ["run", "--bundle", str(bundle), "--source", "synthetic", "--max-frames", "1"]
    args += ["--state-dir", str(tmp_path / "state"), "--trusted-key", str(keys["new"][1])]
    done = run(RUNTIME, *args, cwd=tmp_path)
    assert done.returncode == 2
    assert f"edge-runtime: error: {bundle}: unsigned: no manifest.sig" in done.stderr
    sign_bundle(bundle, keys["new"][0])
    ok = run(RUNTIME, *args, "--trusted-key", str(keys["old"][1]), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert '"frame_id"' in ok.stdout


def test_runtime_inspect_shows_the_signature_state(
    bundle: Path, keys: dict[str, tuple[Path, Path]], tmp_path: Path
) -> None:
    assert "signature: unsigned" in run(RUNTIME, "inspect", str(bundle), cwd=tmp_path).stdout
    sign_bundle(bundle, keys["new"][0])
    unchecked = run(RUNTIME, "inspect", str(bundle), cwd=tmp_path)
    assert "signature: present, not checked (no --trusted-key)" in unchecked.stdout
    key_id = pub(keys, "new")[0].key_id
    checked = run(RUNTIME, "inspect", str(bundle), "--trusted-key", str(keys["new"][1]), cwd=tmp_path)
    assert f"signature: signed by {key_id} (verified)" in checked.stdout
    wrong = run(RUNTIME, "inspect", str(bundle), "--trusted-key", str(keys["other"][1]), cwd=tmp_path)
    assert wrong.returncode == 2
    assert "signature does not match any trusted key" in wrong.stderr


@pytest.mark.parametrize(
    ("command", "args", "example"),
    [
        pytest.param(EXPORT, ["keygen", "--help"], "edge-export keygen keys/release", id="keygen"),
        pytest.param(
            EXPORT, ["sign", "--help"], "edge-export sign build/demo_bundle --key keys/release.key", id="sign"
        ),
        pytest.param(RUNTIME, ["run", "--help"], "--trusted-key release.pub", id="run"),
        pytest.param(RUNTIME, ["inspect", "--help"], "--trusted-key /etc/edge-runtime/release.pub", id="inspect"),
    ],
)
def test_help_shows_signing_examples(command: list[str], args: list[str], example: str, tmp_path: Path) -> None:
    done = run(command, *args, cwd=tmp_path)
    assert done.returncode == 0
    assert example in done.stdout


def test_quantize_drops_the_signature_and_says_so(
    signed: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from exporter.quantize import QuantizeOptions, quantize_bundle

    out = tmp_path / "fp16"
    with caplog.at_level(logging.WARNING, logger="exporter.quantize"):
        quantize_bundle(signed, out, QuantizeOptions(precision="fp16", limit=8))
    assert not (out / "manifest.sig").exists()
    assert any("signature (manifest.sig) is dropped" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("extra", ["trunk.fp32.onnx.data", "heads/extra.bin"])
def test_a_signed_bundle_may_not_hold_unlisted_files(
    extra: str, signed: Path, keys: dict[str, tuple[Path, Path]]
) -> None:
    load_bundle(signed, trusted_keys=pub(keys, "new"))
    (signed / extra).write_bytes(b"\0" * 16)  # e.g. external data ONNX Runtime would load unchecked
    with pytest.raises(SignatureError, match=r"not listed in the signed manifest.json"):
        load_bundle(signed, trusted_keys=pub(keys, "new"))
    load_bundle(signed)  # without keys nothing is signature-checked, and the hashes still pass


def test_signing_refuses_a_bundle_with_unlisted_files(bundle: Path, keys: dict[str, tuple[Path, Path]]) -> None:
    (bundle / "notes.txt").write_text("left over")
    with pytest.raises(BundleError, match=r"holds files its manifest does not list \(notes.txt\)"):
        sign_bundle(bundle, keys["new"][0])
    assert not (bundle / "manifest.sig").exists()
