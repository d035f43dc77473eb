"""Turn an upload (a .zip or a folder) into a validated dataset index, and report on its health.

Three stages, each usable on its own, each in its own module (this one only names them):

* `extract_archive` (core.data.archives) streams a zip into a folder, refusing anything that could escape
  the folder or exhaust the disk (limits are enforced on the bytes that actually come out, not on headers).
* `scan_folder` (core.data.layouts) recognises the layout (class folders, train/val split folders, or a CSV
  of labels), opens every image once, and returns a `DatasetIndex` whose `content_hash` identifies the data.
* `health_report` / `leakage` (core.data.health) look for what silently spoils a model: duplicates,
  train/val leakage, imbalance, tiny or grayscale images.

Problems with single files never sink an upload: they are listed as `Skipped` with a reason, and
the rest stays usable. Problems with the upload as a whole raise `IngestError`. The records and limits
they share live in core.data.records.
"""
from __future__ import annotations

from core.data.archives import extract_archive
from core.data.health import health_report, leakage
from core.data.layouts import merge_into, scan_folder
from core.data.records import (ARCHIVE_EXTENSIONS, FILENAME_COLUMNS, LABEL_COLUMNS, LAYOUTS, SPLIT_COLUMNS,
                               ArchiveTooLarge, DatasetIndex, IngestError, Item, Limits, Skipped)

__all__ = [
    "ARCHIVE_EXTENSIONS", "ArchiveTooLarge", "DatasetIndex", "FILENAME_COLUMNS", "IngestError", "Item",
    "LABEL_COLUMNS", "LAYOUTS", "Limits", "SPLIT_COLUMNS", "Skipped", "extract_archive", "health_report",
    "leakage", "merge_into", "scan_folder",
]
