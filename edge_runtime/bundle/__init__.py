"""The bundle contract: the manifest and its parts, the bundle reader (sizes, hashes, signature), its summary.

Public names are imported from their module on first use (:mod:`edge_runtime.lazy_exports`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from edge_runtime.bundle.fields import (
        bundle_path_problem as bundle_path_problem,
    )
    from edge_runtime.bundle.fields import (
        check_bundle_path as check_bundle_path,
    )
    from edge_runtime.bundle.fields import (
        check_keys as check_keys,
    )
    from edge_runtime.bundle.manifest import (
        Manifest as Manifest,
    )
    from edge_runtime.bundle.reader import (
        Bundle as Bundle,
    )
    from edge_runtime.bundle.reader import (
        check_manifest_size as check_manifest_size,
    )
    from edge_runtime.bundle.reader import (
        load_bundle as load_bundle,
    )
    from edge_runtime.bundle.reader import (
        parse_manifest as parse_manifest,
    )
    from edge_runtime.bundle.reader import (
        read_manifest as read_manifest,
    )
    from edge_runtime.bundle.reader import (
        read_manifest_bytes as read_manifest_bytes,
    )
    from edge_runtime.bundle.reader import (
        sha256_file as sha256_file,
    )
    from edge_runtime.bundle.reader import (
        silence_unchecked_warning as silence_unchecked_warning,
    )
    from edge_runtime.bundle.reader import (
        unlisted_files as unlisted_files,
    )
    from edge_runtime.bundle.selftest_spec import (
        SelfTestSpec as SelfTestSpec,
    )
    from edge_runtime.bundle.specs import (
        Artifact as Artifact,
    )
    from edge_runtime.bundle.specs import (
        DecoderSpec as DecoderSpec,
    )
    from edge_runtime.bundle.specs import (
        GraphEntry as GraphEntry,
    )
    from edge_runtime.bundle.specs import (
        InputSpec as InputSpec,
    )
    from edge_runtime.bundle.specs import (
        Schedule as Schedule,
    )
    from edge_runtime.bundle.specs import (
        TensorInfo as TensorInfo,
    )
    from edge_runtime.bundle.summary import (
        format_bundle as format_bundle,
    )
    from edge_runtime.bundle.summary import (
        format_table as format_table,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "fields": ("check_keys", "bundle_path_problem", "check_bundle_path"),
        "manifest": ("Manifest",),
        "reader": (
            "sha256_file",
            "Bundle",
            "read_manifest",
            "read_manifest_bytes",
            "check_manifest_size",
            "parse_manifest",
            "unlisted_files",
            "silence_unchecked_warning",
            "load_bundle",
        ),
        "specs": (
            "InputSpec",
            "TensorInfo",
            "Artifact",
            "DecoderSpec",
            "Schedule",
            "GraphEntry",
        ),
        "selftest_spec": ("SelfTestSpec",),
        "summary": ("format_table", "format_bundle"),
    },
)
