"""The bundle contract: typed, validated views of ``manifest.json``.

The exporter writes a manifest with :meth:`Manifest.to_dict`; the runtime reads one with
:meth:`Manifest.from_mapping`. Field names are part of the bundle contract and are never renamed.
Reading is tolerant of *unknown* keys (a newer exporter may add fields: they are logged
once) but strict about the ones it knows: a wrong type or value raises
:class:`~edge_runtime.errors.BundleError` naming the field. The manifest's parts (input, trunk
and heads, artifacts, self-test) are the dataclasses of :mod:`edge_runtime.bundle.specs`; the
checks of single fields and the path rule for every file it names are
:mod:`edge_runtime.bundle.fields`.

Example::

    from edge_runtime.bundle.manifest import Manifest
    manifest = Manifest.from_mapping(json.load(open("bundle/manifest.json")), "bundle/manifest.json")
    print(manifest.trunk.outputs, list(manifest.heads))
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_runtime.bundle.fields import check_bundle_path, check_keys, field_error, get_field
from edge_runtime.bundle.selftest_spec import SelfTestSpec
from edge_runtime.bundle.specs import GraphEntry, InputSpec, TensorInfo
from edge_runtime.errors import BundleError

logger = logging.getLogger(__name__)

FORMAT = "edge-bundle/1"
FORMAT_MAJOR = 1
FILE_ENTRY_KEYS = frozenset({"sha256", "size"})
SHA256_PATTERN = re.compile(r"sha256:[0-9a-f]{64}")


def _file_entry(rel: str, entry: Any, where: str) -> tuple[str, int | None]:
    """One ``files`` entry: ``"sha256:<hex>"`` (the first form) or ``{"sha256": ..., "size": N}``."""
    if isinstance(entry, Mapping):
        check_keys(entry, FILE_ENTRY_KEYS, f"{where}: files[{rel!r}]", strict=False)
        digest, size = entry.get("sha256"), entry.get("size")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise field_error(
                BundleError, where, f"files[{rel!r}].size must be a whole number of bytes >= 0, got {size!r}"
            )
    else:
        digest, size = entry, None
    if not isinstance(digest, str) or not SHA256_PATTERN.fullmatch(digest):
        raise field_error(
            BundleError, where, f"files[{rel!r}] must be 'sha256:<hex>' (64 lowercase hex digits), got {digest!r}"
        )
    return digest, size


@dataclass(frozen=True)
class Manifest:
    """The whole ``manifest.json`` of a bundle."""

    name: str
    version: str
    created: str
    exporter: str
    input: InputSpec
    trunk: GraphEntry
    heads: Mapping[str, GraphEntry]
    files: Mapping[str, str]
    tensors: Mapping[str, TensorInfo] = field(default_factory=dict)
    #: Size in bytes of each listed file, where the manifest records it (exporters since the
    #: size was added); files of older manifests have a hash only.
    file_sizes: Mapping[str, int] = field(default_factory=dict)
    format: str = FORMAT
    split: Mapping[str, Any] = field(default_factory=dict)
    selftest: SelfTestSpec | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    KEYS = (
        "format",
        "name",
        "version",
        "created",
        "exporter",
        "input",
        "trunk",
        "heads",
        "files",
        "tensors",
        "split",
        "selftest",
    )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "manifest.json") -> Manifest:
        """Validate a parsed manifest; raise :class:`BundleError` naming the bad field."""
        if not isinstance(data, Mapping):
            raise BundleError(f"{where}: the manifest must be a JSON object")
        fmt = get_field(data, "format", str, where, BundleError)
        family, _, major = fmt.partition("/")
        if family != "edge-bundle" or not major.isdigit():
            raise BundleError(f"{where}: 'format' is {fmt!r}, expected {FORMAT!r}")
        if int(major) != FORMAT_MAJOR:
            raise BundleError(
                f"{where}: bundle format {fmt!r} is not supported by this runtime (reads {FORMAT!r}); "
                "re-export the bundle or upgrade edge-runtime"
            )
        extra = {k: v for k, v in data.items() if k not in cls.KEYS}
        for key in extra:
            logger.warning("%s: ignoring unknown key %r (written by a newer exporter?)", where, key)
        heads = get_field(data, "heads", dict, where, BundleError)
        if not heads:
            raise BundleError(f"{where}: 'heads' is empty: a bundle needs at least one head")
        files: dict[str, str] = {}
        file_sizes: dict[str, int] = {}
        for path, entry in get_field(data, "files", dict, where, BundleError).items():
            check_bundle_path(path, "files key", where)
            files[path], size = _file_entry(path, entry, where)
            if size is not None:
                file_sizes[path] = size
        tensors = get_field(data, "tensors", dict, where, BundleError, {})
        return cls(
            format=fmt,
            name=get_field(data, "name", str, where, BundleError),
            version=str(get_field(data, "version", (str, int), where, BundleError)),
            created=get_field(data, "created", str, where, BundleError, ""),
            exporter=get_field(data, "exporter", str, where, BundleError, ""),
            input=InputSpec.from_mapping(get_field(data, "input", dict, where, BundleError), f"{where}: input"),
            trunk=GraphEntry.from_mapping(
                get_field(data, "trunk", dict, where, BundleError), f"{where}: trunk", head=False
            ),
            heads={
                name: GraphEntry.from_mapping(entry, f"{where}: heads.{name}", head=True)
                for name, entry in heads.items()
            },
            files=files,
            file_sizes=file_sizes,
            tensors={name: TensorInfo.from_mapping(info, f"{where}: tensors.{name}") for name, info in tensors.items()},
            split=get_field(data, "split", dict, where, BundleError, {}),
            selftest=(
                SelfTestSpec.from_mapping(data["selftest"], f"{where}: selftest") if "selftest" in data else None
            ),
            extra=extra,
        )

    def graphs(self) -> dict[str, GraphEntry]:
        """The trunk (key ``"trunk"``) and every head, by name."""
        return {"trunk": self.trunk, **self.heads}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict in the contract's key order."""
        return {
            "format": self.format,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "exporter": self.exporter,
            "input": self.input.to_dict(),
            "trunk": self.trunk.to_dict(),
            "heads": {name: head.to_dict() for name, head in self.heads.items()},
            "tensors": {name: info.to_dict() for name, info in self.tensors.items()},
            **({"split": dict(self.split)} if self.split else {}),
            **({"selftest": self.selftest.to_dict()} if self.selftest is not None else {}),
            **self.extra,
            "files": {
                rel: {"sha256": digest, "size": self.file_sizes[rel]} if rel in self.file_sizes else digest
                for rel, digest in self.files.items()
            },
        }
