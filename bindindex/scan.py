"""Walk the folders given to ``index`` and list the files in them.

The walk follows directory symlinks but never into a directory it has already
entered (so link loops end), lists a file reached through several links once,
and reports broken links instead of skipping them silently.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScannedFile:
    """A regular file found by the walk, with the root it was found under."""

    path: Path
    root: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class ScanProblem:
    """A path the walk could not follow: a broken link or an unreadable folder."""

    path: Path
    root: Path
    reason: str
    detail: str


@dataclass
class ScanResult:
    files: list[ScannedFile] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)
    # Folders whose whole content was listed; items below them that the walk
    # did not see again are gone.
    complete_roots: list[Path] = field(default_factory=list)


def scan(paths: list[Path], *, skip: list[Path] | None = None) -> ScanResult:
    """List the files under ``paths`` (files or folders), sorted by path.

    ``skip`` names folders to leave out, such as the index folder itself.
    Hidden files and folders (names starting with ".") are left out.
    """
    result = ScanResult()
    seen_files: set[tuple[int, int]] = set()
    skip_real = {os.path.realpath(p) for p in (skip or [])}

    for requested in paths:
        root = Path(os.path.abspath(requested))
        if os.path.exists(root):
            # A folder named through a symbolic link is stored under its real
            # path, so indexing it by another name finds the same items.
            root = Path(os.path.realpath(root))
        try:
            st = root.stat()
        except FileNotFoundError:
            result.problems.append(ScanProblem(root, root, "vanished", "path does not exist"))
            continue
        except OSError as exc:
            result.problems.append(ScanProblem(root, root, "unreadable", str(exc)))
            continue
        if stat.S_ISDIR(st.st_mode):
            _walk_dir(root, root, result, seen_files, set(), skip_real)
            result.complete_roots.append(root)
        elif stat.S_ISREG(st.st_mode):
            key = (st.st_dev, st.st_ino)
            if key not in seen_files:
                seen_files.add(key)
                result.files.append(ScannedFile(root, root.parent, st.st_size, st.st_mtime_ns))
        else:
            result.problems.append(
                ScanProblem(root, root, "unreadable", "not a regular file or folder")
            )

    result.files.sort(key=lambda f: os.fsencode(f.path))
    return result


def _walk_dir(
    folder: Path,
    root: Path,
    result: ScanResult,
    seen_files: set[tuple[int, int]],
    ancestors: set[tuple[int, int]],
    skip_real: set[str],
) -> None:
    try:
        st = folder.stat()
    except OSError as exc:
        result.problems.append(ScanProblem(folder, root, "unreadable", str(exc)))
        return
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        log.info("not following %s: it links back to a folder above it", folder)
        return
    if os.path.realpath(folder) in skip_real:
        return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        result.problems.append(ScanProblem(folder, root, "unreadable", str(exc)))
        return

    ancestors = ancestors | {key}
    for entry in entries:
        if entry.name.startswith("."):
            continue
        path = Path(entry.path)
        try:
            entry_stat = entry.stat(follow_symlinks=True)
        except FileNotFoundError:
            if entry.is_symlink():
                target = os.fsdecode(os.readlink(entry.path))
                detail = f"broken symbolic link to {target}; fix or remove the link"
                result.problems.append(ScanProblem(path, root, "broken_link", detail))
            else:
                result.problems.append(
                    ScanProblem(path, root, "vanished", "removed during the scan")
                )
            continue
        except OSError as exc:
            if exc.errno == errno.ELOOP and entry.is_symlink():
                # A link that resolves to itself, directly or through others.
                detail = "symbolic link loops back to itself; fix or remove the link"
                result.problems.append(ScanProblem(path, root, "broken_link", detail))
                continue
            result.problems.append(ScanProblem(path, root, "unreadable", str(exc)))
            continue

        if stat.S_ISDIR(entry_stat.st_mode):
            _walk_dir(path, root, result, seen_files, ancestors, skip_real)
        elif stat.S_ISREG(entry_stat.st_mode):
            file_key = (entry_stat.st_dev, entry_stat.st_ino)
            if file_key in seen_files:
                continue
            seen_files.add(file_key)
            result.files.append(ScannedFile(path, root, entry_stat.st_size, entry_stat.st_mtime_ns))
