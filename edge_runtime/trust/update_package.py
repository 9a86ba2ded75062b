"""Read an update package safely: its manifest and signature first, then only the files it lists.

A package is a bundle directory or a ``.tar.gz`` / ``.tgz`` of one (the bundle at the top level
or in a single top-level folder). A head-only package lacks some listed files; they come from
the running bundle. :func:`stage_package` writes nothing before step 4:

1. index the package without extracting anything: each tar member's name and type (relative,
   no ``..``, no link or device), the number of members and their total size are checked;
2. read ``manifest.json`` (at most 4 MiB) and ``manifest.sig`` (at most 1 KiB) into memory;
3. with trusted keys, verify the signature over those bytes; parse the manifest (bounded
   nesting; every ``files`` key a normalised relative path, one rule for every root); refuse
   members the manifest does not list (with trusted keys; without them they are skipped, with a
   warning) and members whose size differs from the size the manifest lists;
4. write the manifest, the signature and exactly the listed files, each bounded by its listed
   size (a manifest without sizes: the download limit bounds the total), then take the other
   listed files from the running bundle, one validated relative path resolved against both
   roots, hashes checked.

Example::

    with open_package("demo-v2-heads.tar.gz", max_bytes=512 << 20) as package:
        manifest = stage_package(package, staging / "bundle", keys=keys, base=running_bundle)

CLI: ``edge-runtime update demo-v2-heads.tar.gz`` (:mod:`edge_runtime.trust.updates`).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from edge_runtime.bundle.fields import bundle_path_problem
from edge_runtime.bundle.manifest import Manifest
from edge_runtime.bundle.reader import (
    MANIFEST_NAME,
    MAX_MANIFEST_BYTES,
    check_manifest_size,
    parse_manifest,
    sha256_file,
)
from edge_runtime.errors import EdgeRuntimeError
from edge_runtime.trust.keys import PublicKey
from edge_runtime.trust.signatures import MAX_SIGNATURE_BYTES, SIGNATURE_NAME, check_manifest_signature, parse_signature

logger = logging.getLogger(__name__)

#: Most members (files and folders) a tarball may hold: bundles hold a few dozen.
MAX_MEMBERS = 4096
TARBALL_SUFFIXES = (".tar.gz", ".tgz")
_COPY_CHUNK = 1 << 20


class PackageError(EdgeRuntimeError):
    """An update package is malformed, unsafe or does not match its manifest; the message
    names the package and the member or file."""


@dataclass(frozen=True)
class _File:
    """One regular file of a package: its path relative to the bundle root and its size."""

    rel: str
    size: int
    member: tarfile.TarInfo | None = None  # tarball
    path: Path | None = None  # directory


class Package:
    """An opened package: its regular files by relative path (``manifest.json`` and
    ``manifest.sig`` included), indexed without writing anything. Use :func:`open_package`."""

    def __init__(self, source: str, files: dict[str, _File]) -> None:
        self.source = source
        self.files = files

    def open_file(self, entry: _File) -> IO[bytes]:
        raise NotImplementedError

    def read_small(self, rel: str, limit: int) -> bytes | None:
        """The bytes of ``rel`` (None when the package lacks it); at most ``limit`` + 1 bytes."""
        entry = self.files.get(rel)
        if entry is None:
            return None
        with self.open_file(entry) as handle:
            return handle.read(limit + 1)

    def copy_to(self, entry: _File, target: Path) -> None:
        """Write ``entry`` to ``target`` (a new file), refusing more bytes than its indexed size."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        left = entry.size
        with self.open_file(entry) as src, os.fdopen(os.open(target, flags, 0o644), "wb") as out:
            while True:
                chunk = src.read(min(_COPY_CHUNK, left + 1))
                if not chunk:
                    break
                left -= len(chunk)
                if left < 0:
                    raise PackageError(f"{self.source}: {entry.rel} holds more than its {entry.size} bytes")
                out.write(chunk)
        if left:
            raise PackageError(f"{self.source}: {entry.rel} is truncated ({left} of {entry.size} bytes missing)")

    def close(self) -> None:
        """Release the package (the tarball's file)."""


class _DirectoryPackage(Package):
    def open_file(self, entry: _File) -> IO[bytes]:
        assert entry.path is not None
        fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
        return os.fdopen(fd, "rb")


class _TarPackage(Package):
    def __init__(self, source: str, files: dict[str, _File], tar: tarfile.TarFile) -> None:
        super().__init__(source, files)
        self.tar = tar

    def open_file(self, entry: _File) -> IO[bytes]:
        assert entry.member is not None
        handle = self.tar.extractfile(entry.member)
        if handle is None:
            raise PackageError(f"{self.source}: member {entry.member.name!r} cannot be read")
        return handle

    def close(self) -> None:
        self.tar.close()


@contextmanager
def open_package(path: Path, source: str, *, max_bytes: int) -> Iterator[Package]:
    """Index the bundle directory or tarball at ``path`` (``source``: how to name it in
    messages). Nothing is extracted; :class:`PackageError` for an unsafe or oversized one."""
    if path.is_dir():
        package: Package = _DirectoryPackage(source, _index_directory(path, source))
    elif path.is_file() and path.name.endswith(TARBALL_SUFFIXES):
        package = _index_tarball(path, source, max_bytes)
    elif path.exists():
        raise PackageError(f"{source}: not a bundle directory nor a .tar.gz / .tgz of one")
    else:
        raise PackageError(f"{source}: no such file or directory")
    try:
        yield package
    finally:
        package.close()


def _index_directory(root: Path, source: str) -> dict[str, _File]:
    """Regular files under ``root`` by relative path; symlinks are indexed as ``size -1``
    (never read: a listed one is refused, an unlisted one counts as unlisted)."""
    files: dict[str, _File] = {}
    for folder, dirs, names in os.walk(root):  # does not follow symlinked folders
        here = Path(folder)
        for name in [*names, *(d for d in dirs if (here / d).is_symlink())]:
            path = here / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            size = path.lstat().st_size if stat.S_ISREG(mode) else -1
            files[rel] = _File(rel=rel, size=size, path=path)
            if len(files) > MAX_MEMBERS:
                raise PackageError(f"{source}: more than {MAX_MEMBERS} files: not a bundle")
    return files


def _index_tarball(archive: Path, source: str, max_bytes: int) -> _TarPackage:
    """Every member's header read and checked (no data written); regular files by name, with
    a single top-level folder holding ``manifest.json`` stripped."""
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError) as exc:
        raise PackageError(f"{source}: not a readable tarball: {exc}") from exc
    try:
        members: dict[str, tarfile.TarInfo] = {}
        total = 0
        count = 0
        for member in tar:
            count += 1
            if count > MAX_MEMBERS:
                raise PackageError(f"{source}: more than {MAX_MEMBERS} members: not a bundle")
            name = PurePosixPath(member.name)
            if name.is_absolute() or member.name.startswith(("/", "\\")):
                raise PackageError(f"{source}: member {member.name!r} has an absolute path")
            if ".." in name.parts:
                raise PackageError(f"{source}: member {member.name!r} leaves the bundle ('..')")
            if member.issym() or member.islnk():
                raise PackageError(f"{source}: member {member.name!r} is a link; bundles hold regular files only")
            if not (member.isfile() or member.isdir()):
                raise PackageError(f"{source}: member {member.name!r} is not a regular file or directory")
            if member.isdir():
                continue
            total += member.size
            if member.size > max_bytes or total > max_bytes:
                raise PackageError(
                    f"{source}: member {member.name!r} ({member.size / 1e6:.1f} MB) goes over the limit of "
                    f"{max_bytes >> 20} MiB (update_max_download_mb)"
                )
            rel = "/".join(p for p in name.parts if p not in ("", "."))
            if rel in members:
                raise PackageError(f"{source}: member {member.name!r} appears twice")
            members[rel] = member
    except (tarfile.TarError, EOFError, OSError) as exc:
        tar.close()
        raise PackageError(f"{source}: corrupt tarball: {exc}") from exc
    except BaseException:
        tar.close()
        raise
    prefix = _bundle_prefix(members, source)
    if prefix is None:
        tar.close()
        raise PackageError(f"{source}: no {MANIFEST_NAME} at its top level (nor in a single top-level directory)")
    files = {
        rel[len(prefix) :]: _File(rel=rel[len(prefix) :], size=member.size, member=member)
        for rel, member in members.items()
    }
    return _TarPackage(source, files, tar)


def _bundle_prefix(members: dict[str, tarfile.TarInfo], source: str) -> str | None:
    """``""`` when ``manifest.json`` is at the top, ``"<dir>/"`` when a single top-level folder
    holds it and everything else, None otherwise."""
    if MANIFEST_NAME in members:
        return ""
    tops = {rel.split("/", 1)[0] for rel in members}
    if len(tops) == 1:
        prefix = f"{tops.pop()}/"
        if prefix + MANIFEST_NAME in members and all(rel.startswith(prefix) for rel in members):
            return prefix
    return None


def stage_package(
    package: Package,
    target: Path,
    *,
    keys: Sequence[PublicKey] | None,
    base: Path | None,
    max_bytes: int,
) -> Manifest:
    """Steps 2-4 of the module docstring: write the verified manifest, its signature and the
    listed files of ``package`` into the new directory ``target`` and complete it from
    ``base`` (the running bundle). Returns the manifest. Raises :class:`PackageError` or
    :class:`~edge_runtime.errors.BundleError` (a bad signature or manifest), each naming the
    package."""
    source = package.source
    manifest_bytes = package.read_small(MANIFEST_NAME, MAX_MANIFEST_BYTES)
    if manifest_bytes is None:
        raise PackageError(f"{source}: no {MANIFEST_NAME} at its top level (nor in a single top-level directory)")
    where = f"{source}: {MANIFEST_NAME}"
    check_manifest_size(manifest_bytes, where)
    signature_bytes = package.read_small(SIGNATURE_NAME, MAX_SIGNATURE_BYTES)
    signature = None if signature_bytes is None else parse_signature(signature_bytes, source)
    if keys:
        key = check_manifest_signature(manifest_bytes, signature, keys, source)
        logger.info("%s: signature verified before extraction: signed by %s", source, key.key_id)
    manifest = parse_manifest(manifest_bytes, Path(where))
    take, missing = _plan(package, manifest, signed=bool(keys), max_bytes=max_bytes)
    target.mkdir(parents=True)
    (target / MANIFEST_NAME).write_bytes(manifest_bytes)
    if signature_bytes is not None:
        (target / SIGNATURE_NAME).write_bytes(signature_bytes)
    for entry in take:
        destination = _destination(target, entry.rel)
        package.copy_to(entry, destination)
    if missing:
        _fill_from_base(target, base, manifest, missing, source)
    return manifest


def _plan(package: Package, manifest: Manifest, *, signed: bool, max_bytes: int) -> tuple[list[_File], list[str]]:
    """(files to take from the package, listed files it lacks). Every check that needs no
    write happens here: unlisted members, sizes against the manifest, links, the total."""
    source = package.source
    listed = set(manifest.files)
    unlisted = sorted(rel for rel in package.files if rel not in listed and rel not in (MANIFEST_NAME, SIGNATURE_NAME))
    if unlisted and signed:
        raise PackageError(
            f"{source}: {unlisted[0]!r} is not listed in the signed {MANIFEST_NAME}"
            + (f" (and {len(unlisted) - 1} more)" if len(unlisted) > 1 else "")
            + ": a signed package may hold only the files its manifest covers"
        )
    if unlisted:
        logger.warning(
            "%s: skipping %d file(s) the manifest does not list: %s",
            source, len(unlisted), ", ".join(unlisted[:5]) + (" ..." if len(unlisted) > 5 else ""),
        )  # fmt: skip
    take: list[_File] = []
    missing: list[str] = []
    total = 0
    for rel in manifest.files:
        entry = package.files.get(rel)
        if entry is None:
            missing.append(rel)
            continue
        if entry.size < 0:
            raise PackageError(f"{source}: {rel} is a symlink or not a regular file; bundles hold regular files only")
        expected = manifest.file_sizes.get(rel)
        if expected is not None and entry.size != expected:
            raise PackageError(f"{source}: {rel} is {entry.size} bytes, the manifest lists {expected}")
        total += entry.size
        if total > max_bytes:
            raise PackageError(
                f"{source}: the listed files go over the limit of {max_bytes >> 20} MiB (update_max_download_mb)"
            )
        take.append(entry)
    return take, missing


def _destination(root: Path, rel: str) -> Path:
    """``root/rel`` with its folders made; ``rel`` has passed the manifest's path rule, and every
    folder is created here (so none is a link)."""
    problem = bundle_path_problem(rel)
    if problem is not None:  # the manifest parser refuses these first; kept as the last guard
        raise PackageError(f"{root}: file name {problem}")
    path = root.joinpath(*rel.split("/"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _fill_from_base(target: Path, base: Path | None, manifest: Manifest, missing: list[str], source: str) -> None:
    """Head-only package: take each listed file the package lacks from ``base`` when its size and
    sha256 there are the ones the manifest records (hard link when possible, else copy). The
    same relative path is resolved against ``base`` and ``target``; a file in ``base`` reached
    through a symlink, or not a regular file, is not taken."""
    if base is None:
        raise PackageError(
            f"{source}: lacks {', '.join(missing)} and there is no running bundle to take them from "
            "(a head-only package needs a base)"
        )
    base_root = base.resolve()
    for rel in missing:
        original = base_root.joinpath(*rel.split("/"))
        try:
            inside = original.resolve().is_relative_to(base_root)
            info = original.lstat()
        except (OSError, RuntimeError):
            inside, info = False, None
        if not inside or info is None or not stat.S_ISREG(info.st_mode):
            raise PackageError(
                f"{source}: {rel} is not in the package nor (as a regular file) in the running bundle {base}"
            )
        size = manifest.file_sizes.get(rel)
        if size is not None and info.st_size != size:
            raise PackageError(
                f"{source}: {rel} is not in the package and the running bundle's copy is {info.st_size} bytes, "
                f"the manifest lists {size}: this package was made for another base"
            )
        expected = manifest.files[rel]
        actual = sha256_file(original)
        if actual != expected:
            raise PackageError(
                f"{source}: {rel} is not in the package and the running bundle's copy differs "
                f"(manifest {expected[:19]}…, {base} has {actual[:19]}…): this package was made for another base"
            )
        destination = _destination(target, rel)
        try:
            os.link(original, destination, follow_symlinks=False)
        except OSError:
            shutil.copyfile(original, destination, follow_symlinks=False)
    logger.info("head-only package: took %d unchanged file(s) from %s: %s", len(missing), base, ", ".join(missing))


__all__ = ["MAX_MEMBERS", "TARBALL_SUFFIXES", "Package", "PackageError", "open_package", "stage_package"]
