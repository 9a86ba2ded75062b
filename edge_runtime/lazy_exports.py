"""Package ``__init__`` exports that import their module only when first used.

Each package of ``edge_runtime`` exports its public names from its ``__init__``; importing them
eagerly would make every package import every other one on the first import (``bundle`` checks
signatures from ``trust``, whose updates read bundles) and would pull paho or SQLite into a
process that only reads a manifest. :func:`lazy_exports` builds a module ``__getattr__``
(PEP 562) that imports the defining module on first access; the package's
``if TYPE_CHECKING:`` imports give type checkers the same names.

Example (in ``edge_runtime/inference/__init__.py``)::

    __getattr__, __all__ = lazy_exports(__name__, {"engine": ("Engine", "EngineOptions")})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, Sequence[str]]) -> tuple[Callable[[str], Any], list[str]]:
    """``(__getattr__, __all__)`` for ``package``: each name of ``modules[module]`` is read from
    ``<package>.<module>`` when first asked for (then cached in the package's namespace)."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        vars(importlib.import_module(package))[name] = value
        return value

    return __getattr__, sorted(where)


__all__ = ["lazy_exports"]
