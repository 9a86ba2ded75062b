"""edge-export: split a trained multi-task model into a verified trunk + heads bundle.

Runs on a workstation. Public names are imported from their module on first use
(:mod:`edge_runtime.lazy_exports`), so ``import exporter`` loads no onnx, torch or TensorFlow
and ``edge-export keygen|sign|inspect|head-update`` need only the ``signing`` extra::

    from exporter import ExportOptions, SplitOptions, export
    export("model.onnx", "bundle", ExportOptions(split=SplitOptions(force=True), precision="int8"))

CLI: ``edge-export split model.onnx -o bundle``
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from exporter.chain import (
        ExportOptions as ExportOptions,
    )
    from exporter.chain import (
        ExportResult as ExportResult,
    )
    from exporter.chain import (
        export as export,
    )
    from exporter.pipeline import (
        SplitOptions as SplitOptions,
    )
    from exporter.pipeline import (
        SplitResult as SplitResult,
    )
    from exporter.pipeline import (
        split_model as split_model,
    )
    from exporter.split import (
        SplitPlan as SplitPlan,
    )
    from exporter.split import (
        plan_split as plan_split,
    )

__getattr__, __all__ = lazy_exports(
    __name__,
    {
        "chain": ("ExportOptions", "ExportResult", "export"),
        "pipeline": ("SplitOptions", "SplitResult", "split_model"),
        "split": ("SplitPlan", "plan_split"),
    },
)
