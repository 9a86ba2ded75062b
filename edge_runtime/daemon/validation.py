"""Building the daemon's engine from its settings, and ``edge-runtime run --validate``.

Example::

    engine = build_engine(config, config.bundle)      # backend, precision, keys, head overrides
    print(validate(config))                            # writes nothing
    mqtt, options, keys = delivery_settings(config)    # what run checks before it connects
    build_engine(config, config.bundle, strict=True)  # ConfigError where a graph would fall back

CLI: ``edge-runtime run --config config.toml --validate``
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.reader import read_manifest
from edge_runtime.config import RuntimeConfig
from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.frames.sources import open_source
from edge_runtime.inference.engine import Engine, EngineOptions
from edge_runtime.names import redact_url
from edge_runtime.ops.device import bundle_formats, resolve_engine_options
from edge_runtime.trust.updates import Slots
from edge_runtime.tuning.configs import AUTO

if TYPE_CHECKING:
    from edge_runtime.delivery.mqtt.settings import MqttConfig
    from edge_runtime.delivery.spool_file import SpoolOptions

logger = logging.getLogger(__name__)


def loaded_heads(config: RuntimeConfig, manifest: Manifest) -> tuple[str, ...]:
    """The heads of ``manifest`` the engine loads: all but those the config disables
    (``[heads.<name>] enabled = false``); a config head the bundle lacks is a :class:`ConfigError`."""
    names = tuple(manifest.heads)
    for name in config.heads:
        if name not in manifest.heads:
            raise ConfigError(
                f"config heads.{name}: the bundle has no head {name!r}{close_matches(name, names)}; "
                f"heads: {', '.join(names)}"
            )
    return tuple(n for n in names if n not in config.heads or config.heads[n].enabled is not False)


def engine_options(config: RuntimeConfig, bundle: Path, manifest: Manifest, heads: tuple[str, ...]) -> EngineOptions:
    """Backend, precision and threads for ``bundle``: with ``backend`` and ``precision`` both
    ``auto`` (the defaults), the tuning ``edge-runtime tune`` kept in the state directory for this
    bundle and device, per graph (an explicit ``threads`` still sizes the trunk); without a
    matching one, or with either set, the settings over the device profile's (logged: why)."""
    from edge_runtime.tuning.record import tuning_for

    backend = None if config.backend in (None, AUTO) else config.backend
    precision = None if config.precision in (None, AUTO) else config.precision
    options, _ = resolve_engine_options(
        config.profile,
        backend=backend,
        precision=precision,
        threads=config.threads,
        bundle_formats=bundle_formats(manifest, heads),
    )
    if backend is not None or precision is not None:
        return replace(options, origin="as configured")
    choice, why = tuning_for(bundle, Path(config.state_dir))
    if choice is None:
        logger.info("not tuned (%s): the device profile's choice; edge-runtime tune measures this device", why)
        return replace(options, origin="device profile, not tuned")
    if config.threads is not None:
        choice["trunk"] = replace(choice["trunk"], threads=config.threads)
    return replace(options, graphs=choice, origin=why)


def build_engine(config: RuntimeConfig, bundle: Path, *, strict: bool | None = None) -> Engine:
    """The engine of ``bundle`` with the config's backend, precision, threads (over the device
    profile's), trusted keys (the bundle's signature is checked first) and head overrides. A head
    the config disables is not loaded at all (so its artifacts do not matter); ``strict`` (default:
    the config's): refuse a bundle where a graph would run on another backend or precision than
    asked (:mod:`edge_runtime.inference.artifact_choice`)."""
    from edge_runtime.trust.keys import KeyFileError, load_public_keys

    try:
        keys = tuple(load_public_keys(config.trusted_keys))
    except KeyFileError as exc:
        raise ConfigError(f"trusted_keys: {exc}") from exc
    manifest = read_manifest(bundle)
    heads = loaded_heads(config, manifest)
    options = engine_options(config, bundle, manifest, heads)
    strict = config.strict if strict is None else strict
    options = replace(options, trusted_keys=keys or None, heads=heads, strict=strict)
    engine = Engine.from_bundle(bundle, options)
    for name, override in config.heads.items():
        if name not in engine.head_names:
            continue  # disabled: not loaded
        if override.every_n_frames is not None:
            engine.scheduler.set_every_n_frames(name, override.every_n_frames)
    return engine


def mqtt_settings(config: RuntimeConfig) -> MqttConfig | None:
    """The broker's settings from ``broker`` and ``topic_prefix`` (None without a broker), with the
    device's topics and the ``tls_*`` files checked: a :class:`ConfigError` naming the URL or the file."""
    if config.broker is None:
        return None
    from edge_runtime.delivery.mqtt.client import tls_context
    from edge_runtime.delivery.mqtt.settings import DeviceTopics, MqttConfig

    mqtt = MqttConfig.from_url(config.broker, topic_prefix=config.topic_prefix)
    DeviceTopics(mqtt.topic_prefix, config.device_id)
    if mqtt.uses_tls:
        tls_context(mqtt)  # reads the CA, certificate and key: missing or invalid files are named now
    return mqtt


def spool_options(config: RuntimeConfig) -> SpoolOptions:
    """The spool's options from the ``spool_*`` settings (checked by :class:`SpoolOptions`)."""
    from edge_runtime.delivery.spool_file import SpoolOptions

    return SpoolOptions(
        max_rows=config.spool_max_rows,
        max_bytes=config.spool_max_bytes,
        synchronous="full" if config.spool_synchronous == "full" else "normal",
    )


def command_keys(config: RuntimeConfig) -> list[Any]:
    """The operator public keys of ``command_keys`` (empty: remote commands off); an unreadable or
    invalid key file is a :class:`ConfigError` naming it."""
    from edge_runtime.trust.keys import KeyFileError, load_public_keys

    try:
        return load_public_keys(config.command_keys)
    except KeyFileError as exc:
        raise ConfigError(f"command_keys: {exc}") from exc


def delivery_settings(config: RuntimeConfig) -> tuple[MqttConfig | None, SpoolOptions | None, list[Any]]:
    """Everything ``run`` checks of the broker, the spool and the command keys before it opens
    them, without writing anything: ``(mqtt settings, spool options, command keys)``, the first
    two None without a broker. A configured key file is checked even without a broker."""
    mqtt = mqtt_settings(config)
    spool = config.spool or Path(config.state_dir) / "spool.sqlite"
    if mqtt is not None and spool.exists() and not spool.is_file():
        raise ConfigError(f"spool {spool}: not a regular file")
    return mqtt, None if mqtt is None else spool_options(config), command_keys(config)


def check_state_dir(config: RuntimeConfig) -> None:
    """Raise :class:`ConfigError` when ``run`` could not create or write the state directory
    (checked with ``os.access``, creating nothing)."""
    path = Path(config.state_dir)
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"state_dir {path}: {existing} is not a directory")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"state_dir {path}: {existing} is not writable by this user")


def validate(config: RuntimeConfig, *, strict: bool | None = None) -> str:
    """Check the config, the bundle that would run (the active update slot's, else the configured
    one: signature when trusted keys are set, hashes, sessions load, with ``strict`` no graph
    falling back), the broker URL, TLS files, spool options and command keys
    (:func:`delivery_settings`) and the source spec; return a summary. Writes nothing: the state directory is
    only read, and not created."""
    from edge_runtime.trust.signatures import signature_state

    slots = Slots(Path(config.state_dir) / "bundles")  # not Slots.open: that creates folders
    slot = slots.read_state()["active"] if slots.state_path.is_file() else None
    check_state_dir(config)
    mqtt, _, keys = delivery_settings(config)
    bundle = config.bundle
    if slot is not None and (slots.slot_path(slot) / "manifest.json").is_file():
        bundle = slots.slot_path(slot)
    with build_engine(config, bundle, strict=strict) as engine:
        source = open_source(config.source, max_frames=1, max_image_pixels=config.max_image_pixels)
        source.close()
        delivery = "no broker" if mqtt is None or config.broker is None else f"broker {redact_url(config.broker)}"
        return (
            f"config ok: bundle {bundle} ({engine.manifest.name} v{engine.manifest.version}, heads "
            f"{', '.join(engine.head_names)}), source {config.source}, state {Path(config.state_dir)}, {delivery}"
            + (f", {len(keys)} command key(s)" if keys else "")
            + "; "
            f"{engine.backend_description}; signature: {signature_state(bundle, engine.bundle.signed_by)}"
            + (f"; artifacts: {engine.plan.summary()}" if engine.plan is not None and engine.plan.fallbacks else "")
        )


__all__ = [
    "build_engine",
    "check_state_dir",
    "command_keys",
    "delivery_settings",
    "loaded_heads",
    "mqtt_settings",
    "spool_options",
    "validate",
]
