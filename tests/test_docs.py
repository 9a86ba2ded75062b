"""Docs that run: every ``sh``/``bash``/``shell``/``console`` block of README.md and docs/*.md.

Each block runs with ``bash -euo pipefail`` in a fresh copy of the checkout (the files git
tracks or would track: ``git ls-files --cached --others --exclude-standard``) after the set-up
the docs assume, the demo bundle exported as the README's Quick start does (:data:`SETUP`,
run once per session and copied). Every block gets its own copy, its own empty ``HOME`` (so the
default state directory ``~/.local/state/edge-runtime`` and ``~/.cache`` are fresh) and no
``EDGE_RUNTIME_*`` / ``XDG_*`` variables, with this virtualenv's ``bin`` first on ``PATH``, and
must exit 0 within :data:`TIMEOUT_S` seconds.

A block that cannot run here (a board, ssh, ``sudo``, a broker at a named host, the network,
your own model, minutes of run time) carries an HTML comment on the line right before its fence:

    <!-- example: needs a Raspberry Pi reachable over ssh -->

and is skipped with that reason. At the end the module prints how many blocks ran and how many
were skipped, with the reasons (shown with or without ``-s``).

Run: ``python -m pytest tests/test_docs.py`` (about 15 s).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sysconfig
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: The pages whose shell blocks must run; docs/configuration.md is generated (it has none).
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
TIMEOUT_S = 60
#: The set-up the docs assume: the demo bundle in build/demo_bundle, as the Quick start exports it.
SETUP = (
    "edge-export split examples/demo_multitask.onnx -o build/demo_bundle "
    "--input-spec examples/demo_input.toml --head-spec examples/demo_heads.toml"
)
MARKER = re.compile(r"^\s*<!--\s*example:\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it starts (1-based line of the fence), its language and code."""

    page: str
    line: int
    language: str
    code: str
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def find_blocks(text: str, page: str) -> list[Block]:
    """Every fenced block of a Markdown text (indented ones in list items too), code dedented by its
    fence's indentation; ``skip_reason`` from an ``<!-- example: ... -->`` line right before it."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        language = (opening["info"].split() or [""])[0].lower()
        end = i + 1
        while end < len(lines):
            closing = FENCE.match(lines[end])
            if closing and closing["fence"][0] == fence[0] and len(closing["fence"]) >= len(fence):
                if not closing["info"].strip():
                    break
            end += 1
        body = [line[indent:] if line[:indent].strip() == "" else line.lstrip() for line in lines[i + 1 : end]]
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        blocks.append(Block(page, i + 1, language, "\n".join(body) + "\n", marker["reason"] if marker else None))
        i = end + 1
    return blocks


def console_commands(code: str) -> str:
    """A ``console`` block's commands: its ``$ `` lines without the prompt (the rest is output)."""
    return "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ ")) + "\n"


def shell_blocks() -> list[Block]:
    blocks = []
    for path in PAGES:
        page = path.relative_to(ROOT).as_posix()
        blocks += [b for b in find_blocks(path.read_text(encoding="utf-8"), page) if b.language in SHELL_LANGUAGES]
    return blocks


BLOCKS = shell_blocks()
#: ``id -> "ran" | "skipped: <reason>"``, filled by the tests and printed at the end of the module.
OUTCOMES: dict[str, str] = {}


def block_env(home: Path) -> dict[str, str]:
    """The environment of one block: a fresh HOME, this venv's bin first, no inherited state."""
    dropped = ("EDGE_RUNTIME_", "EDGE_EXPORT_", "XDG_", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    env.pop("STATE_DIRECTORY", None)
    env.pop("VIRTUAL_ENV", None)
    scripts = sysconfig.get_path("scripts")
    env.update(HOME=str(home), PATH=os.pathsep.join([scripts, env.get("PATH", os.defpath)]), LC_ALL="C.UTF-8")
    env["VIRTUAL_ENV"] = str(Path(scripts).parent)
    return env


def copy_checkout(destination: Path) -> Path:
    """The files git tracks (or would: untracked, not ignored) copied to ``destination``."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the docs run in a copy of the git checkout; git ls-files failed: {exc}")
    for name in filter(None, listed.split(b"\0")):
        relative = os.fsdecode(name)
        source = ROOT / relative
        if source.is_file():  # skips files deleted in the working tree and submodules
            target = destination / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def run_shell(code: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=cwd,
        env=block_env(home),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def prepared_checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the checkout after :data:`SETUP` (read-only: each block runs in a copy of it)."""
    base = tmp_path_factory.mktemp("docs-setup")
    checkout = copy_checkout(base / "checkout")
    done = run_shell(SETUP, checkout, base / "home")
    assert done.returncode == 0, f"set-up `{SETUP}` failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return checkout


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print how many blocks ran and how many were skipped, with the reasons, after the module
    (past pytest's output capture, so it shows with or without ``-s``)."""
    yield
    if not OUTCOMES:
        return
    ran = [block_id for block_id, outcome in OUTCOMES.items() if outcome == "ran"]
    failed = [block_id for block_id, outcome in OUTCOMES.items() if outcome == "failed"]
    skipped = Counter(outcome for outcome in OUTCOMES.values() if outcome.startswith("skipped: "))
    lines = [
        "",
        f"docs: {len(BLOCKS)} shell blocks in {len(PAGES)} pages: {len(ran)} ran, {len(failed)} failed, "
        f"{sum(skipped.values())} skipped",
        f"  ran: {', '.join(ran) or 'none'}",
    ]
    if failed:
        lines.append(f"  failed: {', '.join(failed)}")
    for outcome, count in sorted(skipped.items()):
        where = ", ".join(block_id for block_id, o in OUTCOMES.items() if o == outcome)
        lines.append(f"  skipped, {outcome.removeprefix('skipped: ')} ({count}: {where})")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        for line in lines:
            if reporter is not None:
                reporter.write_line(line)
            else:
                print(line)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_shell_block_runs(block: Block, prepared_checkout: Path, tmp_path: Path) -> None:
    if block.skip_reason is not None:
        OUTCOMES[block.id] = f"skipped: {block.skip_reason}"
        pytest.skip(f"{block.id}: example: {block.skip_reason}")
    checkout = tmp_path / "checkout"
    shutil.copytree(prepared_checkout, checkout, symlinks=True)
    code = console_commands(block.code) if block.language == "console" else block.code
    OUTCOMES[block.id] = "failed"
    try:
        done = run_shell(code, checkout, tmp_path / "home")
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.id}: still running after {TIMEOUT_S} s; mark it <!-- example: REASON --> if it must")
    assert done.returncode == 0, (
        f"{block.id} exited {done.returncode} (fix the docs, or mark the block <!-- example: REASON -->)\n"
        f"--- block ---\n{code}--- stdout (tail) ---\n{done.stdout[-3000:]}\n--- stderr (tail) ---\n"
        f"{done.stderr[-3000:]}"
    )
    OUTCOMES[block.id] = "ran"


# -- the collection itself ------------------------------------------------------------------


def test_blocks_are_found_and_most_run() -> None:
    pages = {block.page for block in BLOCKS}
    assert {"README.md", "docs/deploy-raspberry-pi.md", "docs/deploy-jetson.md"} <= pages
    runnable = [block.id for block in BLOCKS if block.skip_reason is None]
    assert len(runnable) >= 4, f"only {runnable} run: prefer making a block runnable over marking it"
    assert all(block.code.strip() for block in BLOCKS), "an empty shell block"


def test_every_marker_precedes_a_shell_block_and_says_why() -> None:
    for path in PAGES:
        page = path.relative_to(ROOT).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        starts = {block.line: block for block in find_blocks("\n".join(lines), page)}
        for number, line in enumerate(lines, start=1):
            marker = MARKER.match(line)
            if marker is None:
                continue
            block = starts.get(number + 1)
            assert block is not None and block.language in SHELL_LANGUAGES, (
                f"{page}:{number}: an example marker must be the line right before a sh/bash/shell/console fence"
            )
            assert len(marker["reason"]) >= 8, f"{page}:{number}: say why the block cannot run here"


def test_find_blocks_handles_markers_indented_fences_and_other_languages() -> None:
    text = "\n".join(
        [
            "Intro.",
            "<!-- example: needs a broker at broker.local -->",
            "```sh",
            "edge-runtime subscribe --broker mqtt://broker.local",
            "```",
            "- a list item:",
            "",
            "  ```bash",
            '  python -c "',
            "  print('x')",
            '  "',
            "  ```",
            "```toml",
            "a = 1",
            "```",
            "````console",
            "$ echo hi",
            "hi",
            "````",
        ]
    )
    blocks = find_blocks(text, "page.md")
    assert [(b.line, b.language, b.skip_reason) for b in blocks] == [
        (3, "sh", "needs a broker at broker.local"),
        (8, "bash", None),
        (13, "toml", None),
        (16, "console", None),
    ]
    assert blocks[1].code == "python -c \"\nprint('x')\n\"\n"
    assert console_commands(blocks[3].code) == "echo hi\n"
