"""Building the daemon's engine from its settings, and ``edge-runtime run --validate``.

Example::

    engine = build_engine(config, config.bundle)      # backend, precision, keys, head overrides
    print(validate(config))                            # writes nothing

CLI: ``edge-runtime run --config config.toml --validate``
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edge_runtime.bundle.reader import read_manifest
from edge_runtime.config import RuntimeConfig
from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.frames.sources import open_source
from edge_runtime.inference.engine import Engine
from edge_runtime.ops.device import bundle_formats, resolve_engine_options
from edge_runtime.trust.updates import Slots


def build_engine(config: RuntimeConfig, bundle: Path) -> Engine:
    """The engine of ``bundle`` with the config's backend, precision, threads (over the device
    profile's), trusted keys (the bundle's signature is checked first) and head overrides."""
    from edge_runtime.trust.keys import KeyFileError, load_public_keys

    try:
        keys = tuple(load_public_keys(config.trusted_keys))
    except KeyFileError as exc:
        raise ConfigError(f"trusted_keys: {exc}") from exc
    options, _ = resolve_engine_options(
        config.profile,
        backend=config.backend,
        precision=config.precision,
        threads=config.threads,
        bundle_formats=bundle_formats(read_manifest(bundle)),
    )
    options = replace(options, trusted_keys=keys or None)
    engine = Engine.from_bundle(bundle, options)
    for name, override in config.heads.items():
        if name not in engine.head_names:
            engine.close()
            raise ConfigError(
                f"config heads.{name}: the bundle has no head {name!r}"
                f"{close_matches(name, engine.head_names)}; heads: {', '.join(engine.head_names)}"
            )
        if override.enabled is not None:
            engine.set_head_enabled(name, override.enabled)
        if override.every_n_frames is not None:
            engine.scheduler.set_every_n_frames(name, override.every_n_frames)
    return engine


def validate(config: RuntimeConfig) -> str:
    """Check the config, the bundle that would run (the active update slot's, else the configured
    one: signature when trusted keys are set, hashes, sessions load) and the source spec; return
    a summary. Writes nothing: the state directory is only read, and not created."""
    from edge_runtime.trust.signatures import signature_state

    slots = Slots(Path(config.state_dir) / "bundles")  # not Slots.open: that creates folders
    slot = slots.read_state()["active"] if slots.state_path.is_file() else None
    bundle = config.bundle
    if slot is not None and (slots.slot_path(slot) / "manifest.json").is_file():
        bundle = slots.slot_path(slot)
    with build_engine(config, bundle) as engine:
        source = open_source(config.source, max_frames=1)
        source.close()
        return (
            f"config ok: bundle {bundle} ({engine.manifest.name} v{engine.manifest.version}, heads "
            f"{', '.join(engine.head_names)}), source {config.source}, state {Path(config.state_dir)}; "
            f"{engine.backend_description}; signature: {signature_state(bundle, engine.bundle.signed_by)}"
        )


__all__ = ["build_engine", "validate"]
