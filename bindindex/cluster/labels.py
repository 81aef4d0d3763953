"""Ground-truth concepts of indexed files: the top folder or a ``path,label`` CSV file."""

from __future__ import annotations

import csv
import os
from pathlib import Path, PurePath

from bindindex.errors import UsageError
from bindindex.store.catalog import ItemRow


def top_folder_label(path: str, root: str | None) -> str | None:
    """Return the first folder below the indexed root, or None for a file directly in it."""
    if root is None:
        return None
    try:
        relative = PurePath(path).relative_to(root)
    except ValueError:
        return None
    parts = relative.parts
    return parts[0] if len(parts) > 1 else None


def read_label_csv(csv_path: Path) -> dict[str, str]:
    """Read ``path,label`` rows; a first row of ``path,label`` is taken as a header."""
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    path_column, label_column = 0, 1
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), start=1):
                if not row or all(not cell.strip() for cell in row):
                    continue
                header = [cell.strip().lower() for cell in row[:2]]
                if number == 1 and sorted(header) == ["label", "path"]:
                    path_column, label_column = header.index("path"), header.index("label")
                    continue
                if len(row) < 2 or not row[label_column].strip():
                    raise UsageError(
                        f"{csv_path}, line {number}: expected 'path,label', found {row!r}"
                    )
                path, label = row[path_column].strip(), row[label_column].strip()
                if path in labels and labels[path] != label:
                    raise UsageError(
                        f"{csv_path}, line {number}: {path} is labelled {label!r} here and "
                        f"{labels[path]!r} on line {first_line[path]}; keep one label per path"
                    )
                labels[path] = label
                first_line.setdefault(path, number)
    except FileNotFoundError as exc:
        raise UsageError(f"label file {csv_path} not found") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"label file {csv_path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:
        raise UsageError(f"cannot read label file {csv_path}: {exc.strerror or exc}") from exc
    return labels


def csv_label(labels: dict[str, str], path: str, root: str | None, csv_folder: Path) -> str | None:
    """Find a file's label by absolute path, path relative to its root, or relative to the CSV."""
    if path in labels:
        return labels[path]
    candidates = []
    for base in (root, csv_folder):
        if base is not None and PurePath(path).is_relative_to(base):
            candidates.append(str(PurePath(path).relative_to(base)))
    for candidate in candidates:
        if candidate in labels:
            return labels[candidate]
    return None


def item_labels(rows: list[ItemRow], spec: str | os.PathLike[str]) -> list[str | None]:
    """Return the concept of each row: ``top-folder``, or the label in a ``path,label`` CSV file."""
    if str(spec) == "top-folder":
        return [top_folder_label(row.path, row.root) for row in rows]
    csv_path = Path(spec)
    table = read_label_csv(csv_path)
    folder = csv_path.resolve().parent
    return [csv_label(table, row.path, row.root, folder) for row in rows]
