"""edge-export: split a trained multi-task model into a verified trunk + heads bundle.

Runs on a workstation; heavy frameworks (torch) are optional extras imported lazily::

    from exporter import SplitOptions, split_model
    split_model("model.onnx", "bundle", SplitOptions(force=True))

CLI: ``edge-export split model.onnx -o bundle``
"""

from __future__ import annotations

from exporter.pipeline import SplitOptions, SplitResult, split_model
from exporter.split import SplitPlan, plan_split

__all__ = ["SplitOptions", "SplitPlan", "SplitResult", "plan_split", "split_model"]
