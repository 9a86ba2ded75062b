"""Building the daemon's engine from its settings, and ``edge-runtime run --validate``.

Example::

    engine = build_engine(config, config.bundle)      # backend, precision, keys, head overrides
    print(validate(config))                            # writes nothing
    build_engine(config, config.bundle, strict=True)  # ConfigError where a graph would fall back

CLI: ``edge-runtime run --config config.toml --validate``
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.reader import read_manifest
from edge_runtime.config import RuntimeConfig
from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.frames.sources import open_source
from edge_runtime.inference.engine import Engine
from edge_runtime.ops.device import bundle_formats, resolve_engine_options
from edge_runtime.trust.updates import Slots


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


def build_engine(config: RuntimeConfig, bundle: Path, *, strict: bool = False) -> Engine:
    """The engine of ``bundle`` with the config's backend, precision, threads (over the device
    profile's), trusted keys (the bundle's signature is checked first) and head overrides. A head
    the config disables is not loaded at all (so its artifacts do not matter); ``strict``: refuse a
    bundle where a graph would run on another backend or precision than asked
    (:mod:`edge_runtime.inference.artifact_choice`)."""
    from edge_runtime.trust.keys import KeyFileError, load_public_keys

    try:
        keys = tuple(load_public_keys(config.trusted_keys))
    except KeyFileError as exc:
        raise ConfigError(f"trusted_keys: {exc}") from exc
    manifest = read_manifest(bundle)
    heads = loaded_heads(config, manifest)
    options, _ = resolve_engine_options(
        config.profile,
        backend=config.backend,
        precision=config.precision,
        threads=config.threads,
        bundle_formats=bundle_formats(manifest, heads),
    )
    options = replace(options, trusted_keys=keys or None, heads=heads, strict=strict)
    engine = Engine.from_bundle(bundle, options)
    for name, override in config.heads.items():
        if name not in engine.head_names:
            continue  # disabled: not loaded
        if override.every_n_frames is not None:
            engine.scheduler.set_every_n_frames(name, override.every_n_frames)
    return engine


def validate(config: RuntimeConfig, *, strict: bool | None = None) -> str:
    """Check the config, the bundle that would run (the active update slot's, else the configured
    one: signature when trusted keys are set, hashes, sessions load, with ``strict`` no graph
    falling back) and the source spec; return a summary. Writes nothing: the state directory is
    only read, and not created."""
    from edge_runtime.trust.signatures import signature_state

    slots = Slots(Path(config.state_dir) / "bundles")  # not Slots.open: that creates folders
    slot = slots.read_state()["active"] if slots.state_path.is_file() else None
    bundle = config.bundle
    if slot is not None and (slots.slot_path(slot) / "manifest.json").is_file():
        bundle = slots.slot_path(slot)
    with build_engine(config, bundle, strict=config.strict if strict is None else strict) as engine:
        source = open_source(config.source, max_frames=1)
        source.close()
        return (
            f"config ok: bundle {bundle} ({engine.manifest.name} v{engine.manifest.version}, heads "
            f"{', '.join(engine.head_names)}), source {config.source}, state {Path(config.state_dir)}; "
            f"{engine.backend_description}; signature: {signature_state(bundle, engine.bundle.signed_by)}"
            + (f"; artifacts: {engine.plan.summary()}" if engine.plan is not None and engine.plan.fallbacks else "")
        )


__all__ = ["build_engine", "loaded_heads", "validate"]
