"""The decoder interface: :class:`Decoder`, the base class of every family, and :class:`Params`.

A family (one module of :mod:`edge_runtime.inference.decoders`) subclasses :class:`Decoder`:
it sets ``kind`` (the manifest's ``decoder.type``) and ``output_counts``, reads its
parameters in :meth:`Decoder.configure` through :class:`Params` (which checks types and
ranges, errors naming the head and the parameter) and decodes item 0 of the head's
outputs in ``__call__``, checking shapes with :meth:`Decoder.item` and
:meth:`Decoder.bad_shape`.

Example (a decoder that reports the largest value of its one output)::

    class MaxDecoder(Decoder):
        kind = "max"

        def configure(self, params: Params) -> None:
            self.scale = float(params.number("scale", 1.0))

        def __call__(self, tensors, geometry):
            value = float(self.item(tensors, self.outputs[0]).max()) * self.scale
            return Regression(values=np.array([value], np.float32), names=("max",))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edge_runtime.errors import ConfigError, ModelError, close_matches
from edge_runtime.inference.results import HeadResult

if TYPE_CHECKING:
    from edge_runtime.frames.geometry import FrameGeometry


class Params:
    """Reads and checks one head's decoder parameters; errors name the head and the parameter."""

    def __init__(self, head: str, kind: str, params: Mapping[str, Any]) -> None:
        self.head = head
        self.kind = kind
        self.params = params

    def fail(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` about parameter ``key``."""
        return ConfigError(f"head {self.head!r}: {self.kind} decoder parameter {key!r} {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        """The value of ``key`` (``default`` when absent), checked to be of ``kind``."""
        value = self.params.get(key)
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join("number" if k is float else k.__name__ for k in kinds)
            raise self.fail(key, f"must be {names}, got {value!r}")
        return value

    def flag(self, key: str, default: bool) -> bool:
        """A boolean parameter."""
        return bool(self.get(key, bool, default))

    def number(self, key: str, default: float | None, low: float | None = None, high: float | None = None) -> Any:
        """A number within ``[low, high]`` (``None`` = unbounded); ``None`` when absent without default."""
        value = self.get(key, float, default)
        if value is not None and ((low is not None and value < low) or (high is not None and value > high)):
            bounds = f"between {low} and {high}" if low is not None and high is not None else f">= {low}"
            raise self.fail(key, f"must be {bounds}, got {value!r}")
        return value

    def count(self, key: str, default: int | None) -> int | None:
        """A positive integer, or ``default`` when absent."""
        value = self.get(key, int, default)
        if value is not None and value < 1:
            raise self.fail(key, f"must be an integer >= 1, got {value!r}")
        return value

    def choice(self, key: str, choices: Sequence[str], default: str | None) -> str | None:
        """One of ``choices`` (error lists them, with close matches)."""
        value = self.get(key, str, default)
        if value is not None and value not in choices:
            raise self.fail(key, f"is {value!r}{close_matches(value, choices)}; valid choices: {', '.join(choices)}")
        return value

    def names(self, key: str) -> tuple[str, ...] | None:
        """A non-empty list of distinct non-empty names, or ``None`` when absent."""
        value = self.params.get(key)
        if value is None:
            return None
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(isinstance(v, str) and v for v in value)
            or len(set(value)) != len(value)
        ):
            raise self.fail(key, f"must be a non-empty list of distinct names, got {value!r}")
        return tuple(value)


class Decoder:
    """Turns one head's raw outputs into a result; subclasses are registered in
    :data:`edge_runtime.inference.decoders.DECODERS`.

    Build with :func:`build_decoder` (or ``Subclass(head, params, outputs)``), which checks
    the parameters; call with ``decoder(tensors, geometry)``, where ``tensors`` maps the
    head's output names to arrays with the batch dimension first (item 0 is decoded).
    """

    #: Decoder type, as in the manifest.
    kind: ClassVar[str] = ""
    #: How many outputs the head may have: ``(min, max)``, ``None`` = unbounded.
    output_counts: ClassVar[tuple[int, int | None]] = (1, 1)

    def __init__(self, head: str, params: Mapping[str, Any], outputs: Sequence[str]) -> None:
        self.head = head
        self.outputs = tuple(outputs)
        low, high = self.output_counts
        if len(self.outputs) < low or (high is not None and len(self.outputs) > high):
            wanted = str(low) if low == high else f"{low} to {high}" if high is not None else f"at least {low}"
            raise ConfigError(
                f"head {head!r}: the {self.kind} decoder reads {wanted} output(s), "
                f"the head has {len(self.outputs)} ({', '.join(self.outputs) or 'none'})"
            )
        self.configure(Params(head, self.kind, params))

    def configure(self, params: Params) -> None:
        """Read and check the parameters (subclasses)."""

    def __call__(self, tensors: Mapping[str, np.ndarray], geometry: FrameGeometry) -> HeadResult:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(head={self.head!r}, outputs={list(self.outputs)})"

    def item(self, tensors: Mapping[str, np.ndarray], name: str) -> np.ndarray:
        """Item 0 of output ``name`` (which must have a batch dimension)."""
        if name not in tensors:
            raise ModelError(
                f"head {self.head!r}: output {name!r} is missing; got {', '.join(map(repr, tensors)) or 'none'}"
            )
        tensor = np.asarray(tensors[name])
        if tensor.ndim == 0 or tensor.shape[0] < 1:
            raise self.bad_shape(name, tensor.shape, "a batch dimension first, batch >= 1")
        return tensor[0]

    def bad_shape(self, name: str, shape: tuple[int, ...], expected: str) -> ModelError:
        """A :class:`ModelError` about output ``name`` of the wrong shape."""
        return ModelError(
            f"head {self.head!r}: output {name!r} has shape {tuple(shape)}; the {self.kind} decoder expects {expected}"
        )
