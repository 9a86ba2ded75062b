"""Board detection and device profiles: which backend, precision and threads suit this device.

Profiles are TOML files shipped in the package (``edge_runtime/ops/profiles/*.toml``: Raspberry Pi 4
and 5, Jetson Orin and Nano, generic arm64 and x86_64). The board is recognised from
``/proc/device-tree/model``, ``/etc/nv_tegra_release`` and ``/proc/cpuinfo``; an unknown board
gets the generic profile of its architecture, with a warning. A profile's settings are defaults:
``backend``, ``precision`` and ``threads`` set in the config file, the environment or on the
command line win (the profile itself: config ``profile = "auto"``, ``EDGE_RUNTIME_PROFILE``, ``--profile``).

Example::

    board = detect_board()                       # Board(profile="raspberry-pi-5", evidence=...)
    profile, reason = choose_profile(board, None)
    options, notes = resolve_engine_options("auto", backend=None, precision=None, threads=None)

CLI: ``edge-runtime device`` (``--profile NAME`` to see another profile, ``--json``).
"""

from __future__ import annotations

import importlib.util
import logging
import platform
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from edge_runtime.errors import ConfigError, close_matches
from edge_runtime.inference.artifact_choice import BACKEND_FORMATS, native_formats

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

logger = logging.getLogger(__name__)

AUTO = "auto"
PROFILE_KEYS = (
    "name",
    "description",
    "supported",
    "backend",
    "providers",
    "precision",
    "threads",
    "head_threads",
    "camera",
    "notes",
)
#: ``/proc/cpuinfo`` "CPU part" of Arm cores the profiles name.
CPU_PARTS = {"0xd03": "Cortex-A53", "0xd08": "Cortex-A72", "0xd0b": "Cortex-A76", "0xd42": "Cortex-A78AE"}
_ARM64 = ("aarch64", "arm64", "armv8l")
_X86_64 = ("x86_64", "amd64")


@dataclass(frozen=True)
class Profile:
    """One device profile: preferred engine settings and hints for a board.

    ``providers`` are ONNX Runtime execution providers in order of preference (None: the
    backend's default order); ``threads`` sizes the trunk's pool (None: all cores);
    ``supported`` is False for boards this package cannot run on (``notes`` say why).
    """

    name: str
    description: str
    backend: str
    precision: str
    providers: tuple[str, ...] | None = None
    threads: int | None = None
    head_threads: int = 1
    camera: str | None = None
    notes: str = ""
    supported: bool = True

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str) -> Profile:
        """Validate a profile's keys and values; ``where`` names the file in errors."""
        from edge_runtime.bundle.specs import PRECISIONS

        for key in data:
            if key not in PROFILE_KEYS:
                raise ConfigError(f"{where}: unknown key {key!r}{close_matches(key, PROFILE_KEYS)}")
        for key in ("name", "description", "backend", "precision"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ConfigError(f"{where}: {key!r} is required (a string)")
        if data["backend"] not in BACKEND_FORMATS:
            raise ConfigError(f"{where}: backend {data['backend']!r} is not one of {', '.join(BACKEND_FORMATS)}")
        if data["precision"] not in PRECISIONS:
            raise ConfigError(f"{where}: precision {data['precision']!r} is not one of {', '.join(PRECISIONS)}")
        providers = data.get("providers")
        if providers is not None and (
            not isinstance(providers, list) or not all(isinstance(p, str) and p for p in providers)
        ):
            raise ConfigError(f"{where}: 'providers' must be a list of execution provider names")
        for key in ("threads", "head_threads"):
            value = data.get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"{where}: {key!r} must be an integer >= 1, got {value!r}")
        for key in ("camera", "notes"):
            if data.get(key) is not None and not isinstance(data[key], str):
                raise ConfigError(f"{where}: {key!r} must be a string")
        if not isinstance(data.get("supported", True), bool):
            raise ConfigError(f"{where}: 'supported' must be true or false")
        return cls(
            name=data["name"],
            description=data["description"],
            backend=data["backend"],
            precision=data["precision"],
            providers=tuple(providers) if providers else None,
            threads=data.get("threads"),
            head_threads=data.get("head_threads", 1),
            camera=data.get("camera"),
            notes=" ".join(str(data.get("notes", "")).split()),
            supported=data.get("supported", True),
        )

    def settings(self) -> dict[str, Any]:
        """The profile as a plain dict (for ``--json`` and logs)."""
        return {
            "name": self.name,
            "description": self.description,
            "supported": self.supported,
            "backend": self.backend,
            "providers": list(self.providers) if self.providers else None,
            "precision": self.precision,
            "threads": self.threads,
            "head_threads": self.head_threads,
            "camera": self.camera,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Board:
    """What the system files say about this machine.

    ``profile`` is the matching profile's name (None: not recognised); ``evidence`` is
    ``(file, what it said)`` pairs, in the order they were read; ``cpu_parts`` names the
    cores from ``/proc/cpuinfo`` (e.g. ``("Cortex-A72",) * 4``).
    """

    machine: str
    model: str | None = None
    profile: str | None = None
    l4t_release: str | None = None
    cpu_parts: tuple[str, ...] = ()
    evidence: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def describe(self) -> str:
        name = self.model or "unknown board"
        cores = _count_cores(self.cpu_parts)
        return f"{name} ({self.machine}{', ' + cores if cores else ''})"


def _count_cores(parts: Sequence[str]) -> str:
    counts: dict[str, int] = {}
    for part in parts:
        counts[part] = counts.get(part, 0) + 1
    return " + ".join(f"{n}x {part}" for part, n in counts.items())


def _read_text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except OSError:
        return None


def _cpuinfo(text: str) -> tuple[dict[str, str], list[str]]:
    """Board-level fields (Hardware, Model, Revision) and the CPU part of every core."""
    fields: dict[str, str] = {}
    parts: list[str] = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "CPU part":
            parts.append(value.lower())
        elif key in ("Hardware", "Model", "Revision"):
            fields[key] = value
    return fields, parts


def detect_board(root: Path = Path("/"), machine: str | None = None) -> Board:
    """Read the board's identity under ``root`` (``/`` on a device; a fake tree in tests).

    ``machine`` defaults to :func:`platform.machine`. Nothing here raises: missing or unreadable
    files are simply no evidence.
    """
    root = Path(root)
    arch = (machine or platform.machine() or "unknown").lower()
    evidence: list[tuple[str, str]] = []
    model = None
    text = _read_text(root / "proc/device-tree/model")
    if text is not None:
        model = text.replace("\x00", "").strip() or None
        if model:
            evidence.append(("/proc/device-tree/model", model))
    l4t = None
    text = _read_text(root / "etc/nv_tegra_release")
    if text is not None:
        first = text.strip().splitlines()[0] if text.strip() else ""
        match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
        l4t = f"R{match.group(1)}.{match.group(2)}" if match else (first or "present")
        evidence.append(("/etc/nv_tegra_release", first or "(empty)"))
    cpu_fields: dict[str, str] = {}
    parts: list[str] = []
    text = _read_text(root / "proc/cpuinfo")
    if text is not None:
        cpu_fields, part_ids = _cpuinfo(text)
        parts = [CPU_PARTS.get(p, f"CPU part {p}") for p in part_ids]
        said = [f"{k}: {cpu_fields[k]}" for k in ("Hardware", "Model") if k in cpu_fields]
        if parts:
            said.append(_count_cores(parts))
        if said:
            evidence.append(("/proc/cpuinfo", "; ".join(said)))
    if model is None and cpu_fields.get("Model"):
        model = cpu_fields["Model"]
    evidence.append(("platform.machine()", arch))
    profile = _match_profile(model, l4t, cpu_fields, parts)
    return Board(
        machine=arch, model=model, profile=profile, l4t_release=l4t, cpu_parts=tuple(parts), evidence=tuple(evidence)
    )


def _match_profile(model: str | None, l4t: str | None, cpu: Mapping[str, str], parts: Sequence[str]) -> str | None:
    text = " ".join(filter(None, [model, cpu.get("Model"), cpu.get("Hardware")]))
    pi = "Raspberry Pi" in text or cpu.get("Hardware", "").startswith(("BCM2711", "BCM2712"))
    if pi and ("Raspberry Pi 5" in text or "BCM2712" in text or "Cortex-A76" in parts):
        return "raspberry-pi-5"
    if pi and (re.search(r"Raspberry Pi (4|400|Compute Module 4)", text) or "BCM2711" in text or "Cortex-A72" in parts):
        return "raspberry-pi-4"
    jetson = l4t is not None or "Jetson" in text or "NVIDIA" in text
    if jetson:
        major = int(l4t[1:].split(".")[0]) if l4t and re.match(r"R\d+", l4t) else None
        if "Orin" in text or (major is not None and major >= 36):
            return "jetson-orin"
        if "Jetson Nano" in text or major == 32:
            return "jetson-nano"
    return None


def profile_names() -> list[str]:
    """Names of the profiles shipped in the package, sorted."""
    folder = resources.files("edge_runtime.ops") / "profiles"
    return sorted(entry.name[: -len(".toml")] for entry in folder.iterdir() if entry.name.endswith(".toml"))


def load_profile(name: str) -> Profile:
    """The shipped profile ``name``; a ConfigError with close matches when there is none."""
    names = profile_names()
    if name not in names:
        raise ConfigError(f"no device profile {name!r}{close_matches(name, names)}; profiles: {', '.join(names)}")
    entry = resources.files("edge_runtime.ops") / "profiles" / f"{name}.toml"
    where = f"profile {name} ({entry})"
    try:
        data = tomllib.loads(entry.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from exc
    profile = Profile.from_mapping(data, where)
    if profile.name != name:
        raise ConfigError(f"{where}: its name is {profile.name!r}, expected {name!r}")
    return profile


def generic_profile_name(machine: str) -> str:
    """The fallback profile for an architecture (x86_64 for anything not ARM)."""
    return "generic-arm64" if machine.lower() in _ARM64 or machine.lower().startswith("arm") else "generic-x86_64"


def choose_profile(board: Board, override: str | None = None) -> tuple[Profile, str]:
    """The profile for ``board`` and why; ``override`` (a profile name, not ``auto``) wins.

    An unknown board gets the generic profile of its architecture and a logged WARNING (an
    x86_64 machine without a device tree quietly gets generic-x86_64); an
    unsupported board (Jetson Nano) is chosen but logged as a WARNING with the profile's notes.
    """
    if override and override != AUTO:
        return load_profile(override), f"set in the configuration (profile = {override!r})"
    if board.profile is not None:
        profile = load_profile(board.profile)
        said = "; ".join(f"{where}: {what!r}" for where, what in board.evidence if where != "platform.machine()")
        reason = f"detected {board.describe()} from {said}"
        if not profile.supported:
            logger.warning("device profile %s: %s", profile.name, profile.notes)
        return profile, reason
    name = generic_profile_name(board.machine)
    if board.model is None and board.machine in _X86_64:
        # A PC or server: no device tree, nothing more specific to know.
        return load_profile(name), f"an x86_64 machine without a board model: {name}"
    reason = f"board not recognised ({board.describe()}): generic profile for {board.machine}"
    if board.machine not in _ARM64 + _X86_64:
        reason += f"; {board.machine} is not an architecture this package ships for (aarch64, x86_64)"
    logger.warning(
        "%s; set profile = NAME in the config (profiles: %s) if another fits", reason, ", ".join(profile_names())
    )
    return load_profile(name), reason


def installed_runtimes() -> dict[str, Any]:
    """ONNX Runtime's version and providers, and which TFLite interpreter is installed (None: none)."""
    runtimes: dict[str, Any] = {"onnxruntime": None, "tflite": None}
    try:
        import onnxruntime as ort

        runtimes["onnxruntime"] = {"version": ort.__version__, "providers": list(ort.get_available_providers())}
    except ImportError:
        pass
    for module, dist in (("ai_edge_litert", "ai-edge-litert"), ("tflite_runtime", "tflite-runtime")):
        if importlib.util.find_spec(module) is not None:
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                version = "unknown"
            runtimes["tflite"] = {"package": dist, "version": version}
            break
    return runtimes


def backend_importable(backend: str) -> bool:
    """Whether ``backend``'s runtime is installed, without importing it."""
    modules = ("onnxruntime",) if backend == "onnxruntime" else ("ai_edge_litert", "tflite_runtime")
    return any(importlib.util.find_spec(module) is not None for module in modules)


def bundle_formats(manifest: Any, heads: Sequence[str] | None = None) -> set[str]:
    """Artifact formats that every graph of a manifest has (the trunk and ``heads``, None: all):
    the backends that run it without the per-graph backend fallback of
    :mod:`edge_runtime.inference.artifact_choice`. A profile's backend is a default, so it is kept
    only where it runs every loaded graph itself; an explicit backend falls back per graph."""
    return native_formats(manifest, heads)


def resolve_engine_options(
    profile_name: str | None,
    *,
    backend: str | None,
    precision: str | None,
    threads: int | None,
    bundle_formats: set[str] | None = None,
    root: Path = Path("/"),
    machine: str | None = None,
    runtimes: Mapping[str, Any] | None = None,
) -> tuple[Any, list[str]]:
    """EngineOptions from explicit settings (None: not set) over the device profile's defaults.

    Returns the options and the notes explaining each fallback (also logged as warnings): a
    profile backend that is not installed or has no artifacts in the bundle (``bundle_formats``)
    falls back to onnxruntime; profile execution providers this onnxruntime lacks are dropped.
    Explicit settings are never second-guessed.
    """
    profile, reason = choose_profile(detect_board(root, machine), profile_name)
    logger.info("device profile %s: %s", profile.name, reason)
    return engine_options_for(
        profile, backend=backend, precision=precision, threads=threads, bundle_formats=bundle_formats, runtimes=runtimes
    )


def engine_options_for(
    profile: Profile,
    *,
    backend: str | None,
    precision: str | None,
    threads: int | None,
    bundle_formats: set[str] | None = None,
    runtimes: Mapping[str, Any] | None = None,
) -> tuple[Any, list[str]]:
    """:func:`resolve_engine_options` for a profile already chosen (``backend``/``precision``
    ``auto`` count as not set here: the tuning, when there is one, is applied by the caller)."""
    from edge_runtime.inference.engine import EngineOptions
    from edge_runtime.tuning.configs import AUTO

    backend = None if backend == AUTO else backend
    precision = None if precision == AUTO else precision

    # ``runtimes`` None: what is installed, found without importing a runtime the engine may not
    # use (importing onnxruntime alone costs a LiteRT daemon ~20 MiB)
    notes: list[str] = []
    chosen_backend = backend or profile.backend
    if backend is None and profile.backend != "onnxruntime":
        why = None
        installed = (
            runtimes.get(profile.backend) is not None if runtimes is not None else backend_importable(profile.backend)
        )
        if not installed:
            why = f"its runtime is not installed (pip install 'edge-runtime[{profile.backend}]')"
        elif bundle_formats is not None and BACKEND_FORMATS[profile.backend] not in bundle_formats:
            why = f"the bundle has no {BACKEND_FORMATS[profile.backend]} artifacts for every graph"
        if why:
            chosen_backend = "onnxruntime"
            notes.append(f"profile {profile.name} prefers the {profile.backend} backend, but {why}: using onnxruntime")
    providers: tuple[str, ...] | None = None
    if chosen_backend == "onnxruntime" and profile.providers and backend in (None, "onnxruntime"):
        from edge_runtime.inference.backends.onnxruntime import prefer_providers

        if runtimes is None:
            runtimes = {"onnxruntime": installed_runtimes()["onnxruntime"]}
        available = (runtimes.get("onnxruntime") or {}).get("providers") or ["CPUExecutionProvider"]
        kept, message = prefer_providers(profile.providers, available, f"profile {profile.name}")
        providers = tuple(kept)
        if message:
            notes.append(message)
    for note in notes:
        logger.warning("%s", note)
    options = EngineOptions(
        backend=chosen_backend,
        precision=precision or profile.precision,
        threads=threads if threads is not None else profile.threads,
        head_threads=profile.head_threads,
        providers=providers,
    )
    return options, notes


__all__ = [
    "AUTO",
    "Board",
    "Profile",
    "bundle_formats",
    "choose_profile",
    "detect_board",
    "engine_options_for",
    "installed_runtimes",
    "load_profile",
    "profile_names",
    "resolve_engine_options",
]
