"""``python -m edge_runtime.settings [--markdown]``: print docs/configuration.md (generated from
the settings tables) to stdout."""

from __future__ import annotations

import sys

from edge_runtime.settings.page import render_markdown

if __name__ == "__main__":
    if sys.argv[1:] not in ([], ["--markdown"]):
        sys.exit("usage: python -m edge_runtime.settings [--markdown] > docs/configuration.md")
    sys.stdout.write(render_markdown())
