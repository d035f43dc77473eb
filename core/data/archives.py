"""Archive extraction: a zip streamed into a folder, refusing anything that could escape the folder or
exhaust the disk (limits are enforced on the bytes that actually come out, not on headers)."""
from __future__ import annotations

import os
import stat
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


from core.storage import paths
from core.data.records import (ARCHIVE_EXTENSIONS, ArchiveTooLarge, IngestError, LABEL_EXTENSIONS, Limits, Progress,
                               Skipped, ZipSource, _CHUNK, _RATIO_MIN_COMPRESSED, _fmt_bytes, _ignored_reason,
                               _not_image_reason, _suffix, _supported_list)
from core.data.imageio import display_name, is_image_name
from core.data.message import Message
from core.i18n import N_, _

# --------------------------------------------------------------------------------------------
# Archive extraction


def extract_archive(
    src: ZipSource,
    dest: Path,
    limits: Limits = Limits(),
    progress: Progress | None = None,
) -> list[Skipped]:
    """Safely stream a .zip (path or binary file) into `dest`; return the members left out.

    On IngestError, `dest` may already hold files from earlier members; discard it.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest_real = dest.resolve()
    name = display_name(src, _("the upload"))

    with _open_zip(src, name) as zf:
        infos = zf.infolist()
        if not infos:
            raise IngestError(
                _("{name} is an empty zip archive — add your class folders to it and upload again").format(name=name)
            )
        if len(infos) > limits.max_members:
            raise IngestError(
                _("{name} has {n} members, above the limit of {limit} (max_members) — split the dataset into "
                  "several smaller uploads").format(name=name, n=f"{len(infos):,}", limit=f"{limits.max_members:,}")
            )
        encrypted = [i for i in infos if i.flag_bits & 0x1]
        if encrypted:
            raise IngestError(
                _("{name}: encrypted zip archives are not supported ('{member}' is password-protected); re-create "
                  "it without a password").format(name=name, member=encrypted[0].filename)
            )

        skipped: list[Skipped] = []
        plan: list[tuple[zipfile.ZipInfo, list[str]]] = []
        seen: set[str] = set()
        for info in infos:
            parts, reason = _classify_member(info)
            display = _member_name(info)
            if reason is not None:
                skipped.append(Skipped(display, reason))
                continue
            if parts is None:
                continue  # plain directory entry: folders are created as files land in them
            key = "/".join(parts)
            if key in seen:
                skipped.append(Skipped(display, Message(N_("duplicate name in the archive; the first copy was kept"))))
                continue
            seen.add(key)
            if info.file_size > limits.max_member_bytes:
                skipped.append(Skipped(display, _member_too_big(info.file_size, limits)))
                continue
            _check_ratio(display, info.file_size, info.compress_size, limits)
            plan.append((info, parts))

        _check_declared_total(name, plan, limits)

        total_members = len(plan)
        state = _Budget(limits, sum(info.compress_size for info, _ in plan))
        images = 0
        if progress is not None:
            progress(0, total_members)
        for done, (info, parts) in enumerate(plan, start=1):
            display = _member_name(info)
            reason = _extract_member(zf, info, parts, dest, dest_real, state, name, display)
            if reason is not None:
                skipped.append(Skipped(display, reason))
            elif is_image_name(parts[-1]):
                images += 1
            if progress is not None:
                progress(done, total_members)

    if images == 0:
        examples = "; ".join(f"'{s.path}': {s.shown()}" for s in skipped[:3])
        hint = _(" Left out: {examples}.").format(examples=examples) if examples else ""
        raise IngestError(
            _("{name} contains no images — expected {types} files in one folder per class (or with a labels "
              ".csv).").format(name=name, types=_supported_list()) + hint
        )
    return skipped


class _Budget:
    """Running total of decompressed bytes across the archive, and the compressed bytes they come from."""

    def __init__(self, limits: Limits, compressed: int) -> None:
        self.limits = limits
        self.compressed = compressed
        self.total = 0


@contextmanager
def _open_zip(src: ZipSource, name: str) -> Iterator[zipfile.ZipFile]:
    with _seekable(src, name) as fp:
        head = fp.read(300)
        fp.seek(0, os.SEEK_END)
        size = fp.tell()
        fp.seek(0)
        if size == 0:
            raise IngestError(_("{name} is empty (0 bytes) — upload the .zip file again").format(name=name))
        if not zipfile.is_zipfile(fp):
            if head.startswith(b"PK\x03\x04"):
                raise IngestError(
                    _("{name} is a truncated or corrupt zip archive (its table of contents is missing) — the upload "
                      "was probably cut off; re-create the zip and upload again").format(name=name)
                )
            raise IngestError(_("{name} is not a zip archive ({what}) — upload a .zip file").format(
                name=name, what=_sniff(head)))
        fp.seek(0)
        try:
            zf = zipfile.ZipFile(fp)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
            raise IngestError(
                _("{name} is a truncated or corrupt zip archive ({error}) — re-create the zip and upload "
                  "again").format(name=name, error=exc)
            ) from None
        with zf:
            yield zf


@contextmanager
def _seekable(src: ZipSource, name: str) -> Iterator[BinaryIO]:
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise IngestError(_("{name} does not exist or is not a file — check the path to the .zip").format(
                name=name))
        with open(path, "rb") as fh:
            yield fh
        return
    if not hasattr(src, "read"):
        raise IngestError(
            f"expected a path or a binary file object for the archive, got {type(src).__name__} "
            f"— pass the .zip's path or the uploaded file"
        )
    seekable = getattr(src, "seekable", None)
    if callable(seekable) and seekable():
        src.seek(0)
        yield src
        return
    # zipfile needs random access; a one-way stream is spooled (to disk once it grows) in chunks.
    with tempfile.SpooledTemporaryFile(max_size=64 * 1024**2) as spool:
        while chunk := src.read(_CHUNK):
            spool.write(chunk)
        spool.seek(0)
        yield spool  # type: ignore[misc]


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return _("it looks like a gzip / .tar.gz file")
    if head.startswith(b"7z\xbc\xaf\x27\x1c"):
        return _("it looks like a 7-Zip file")
    if head.startswith(b"Rar!"):
        return _("it looks like a RAR file")
    if len(head) >= 262 and head[257:262] == b"ustar":
        return _("it looks like a .tar file")
    if head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")) or head[8:12] == b"WEBP":
        return _("it looks like a single image; put the images in class folders and zip them")
    return _("unrecognised content")


def _member_name(info: zipfile.ZipInfo) -> str:
    name = info.filename
    if info.flag_bits & 0x800:
        return name
    # Without the UTF-8 flag zipfile decodes as cp437, but many tools write UTF-8 names and forget
    # the flag. Undo the cp437 decoding and try UTF-8; genuine cp437 names rarely form valid UTF-8.
    try:
        return name.encode("cp437").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name


def _classify_member(info: zipfile.ZipInfo) -> tuple[list[str] | None, str | None]:
    """(path components to extract, None), (None, reason to report), or (None, None) to pass over."""
    raw = _member_name(info)
    normalized = raw.replace("\\", "/")  # archives made on Windows sometimes use backslashes
    is_dir = info.is_dir() or normalized.endswith("/")
    try:
        parts = paths.relative_parts(normalized)
    except paths.OutsideError as exc:
        if exc.kind == "empty":
            return None, None  # the archive's own root entry
        if exc.kind in _MEMBER_REFUSALS:
            return None, Message(_MEMBER_REFUSALS[exc.kind])
        return None, Message(N_("{error}, not extracted"), error=Message(exc.msgid, **exc.params))
    if is_dir:
        return None, None
    if stat.S_ISLNK(info.external_attr >> 16):
        return None, Message(N_("symbolic link, not extracted (links could point outside the dataset)"))
    ignored = _ignored_reason(parts)
    if ignored:
        return None, ignored
    if _suffix(parts[-1]) in ARCHIVE_EXTENSIONS:
        return None, Message(N_("nested archives are not opened — extract it and add its folders to the upload"))
    if _suffix(parts[-1]) in LABEL_EXTENSIONS or is_image_name(parts[-1]):
        return parts, None
    return None, _not_image_reason(parts[-1])


_MEMBER_REFUSALS = {
    "absolute": N_("absolute path in the archive, not extracted (possible path-traversal attack)"),
    "parent": N_("path leaves the archive folder ('..'), not extracted (possible path-traversal attack)"),
    "nul": N_("name contains a NUL byte, not extracted (possible path-traversal attack)"),
}


def _member_too_big(size: int, limits: Limits) -> str:
    return Message(N_("member is larger than {limit} (max_member_bytes; it holds at least {size}) — downscale or "
                      "remove it"), limit=_fmt_bytes(limits.max_member_bytes), size=_fmt_bytes(size))


def _total_too_big(name: str, total: int, limits: Limits) -> str:
    return _("{name} expands to more than {limit} (max_total_bytes; reached {total}) — split the dataset into "
             "smaller uploads or downscale images").format(name=name, limit=_fmt_bytes(limits.max_total_bytes),
                                                           total=_fmt_bytes(total))


def _check_declared_total(name: str, plan: list[tuple[zipfile.ZipInfo, list[str]]], limits: Limits) -> None:
    # An early, cheap rejection based on headers; the binding check counts bytes as they flow.
    declared = sum(info.file_size for info, _ in plan)
    if declared > limits.max_total_bytes:
        raise ArchiveTooLarge(_total_too_big(name, declared, limits), declared)
    _check_ratio(_("the archive {name}").format(name=name), declared, sum(info.compress_size for info, _ in plan),
                 limits, whole=True)


def _check_ratio(display: str, produced: int, compressed: int, limits: Limits, whole: bool = False) -> None:
    ratio = produced / max(compressed, _RATIO_MIN_COMPRESSED)
    if ratio > limits.max_ratio:
        shown = display if whole else f"'{display}'"
        raise IngestError(
            _("{what} expands {ratio}x (compression ratio limit max_ratio = {limit}) — this looks like a zip bomb; "
              "re-create the archive from ordinary image files (flat bitmaps: save them as PNG)").format(
                what=shown, ratio=f"{ratio:,.0f}", limit=f"{limits.max_ratio:g}")
        )


_OUTSIDE = N_("would be written outside the destination folder, not extracted")


def _extract_member(
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    parts: list[str],
    dest: Path,
    dest_real: Path,
    state: _Budget,
    archive_name: str,
    display: str,
) -> str | None:
    """Write one member under dest; return a skip reason, None on success, or raise IngestError."""
    limits = state.limits
    rel = "/".join(parts)
    if not paths.is_contained(dest_real, rel):
        return Message(_OUTSIDE)
    target = dest_real.joinpath(*parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Message(N_("cannot create its folder ({error}) — a file and a folder share a name"),
                       error=str(exc.strerror or exc))
    if not paths.is_contained(dest_real, rel):  # re-check now that the parents exist
        return Message(_OUTSIDE)
    try:
        out = open(target, "xb")
    except FileExistsError:
        return Message(N_("a file with this name already exists in the destination; kept the existing one"))
    except (OSError, ValueError) as exc:
        return Message(N_("cannot be written ({error}) — rename it"),
                       error=str(getattr(exc, "strerror", None) or exc))

    written = 0
    reason: str | None = None
    try:
        with out, zf.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                written += len(chunk)
                state.total += len(chunk)
                if state.total > limits.max_total_bytes:
                    raise ArchiveTooLarge(_total_too_big(archive_name, state.total, limits), state.total)
                _check_ratio(display, written, info.compress_size, limits)
                _check_ratio(_("the archive {name}").format(name=archive_name), state.total, state.compressed,
                             limits, whole=True)
                if written > info.file_size:
                    reason = Message(N_("holds more data than its header declares ({size}) — the archive is damaged "
                                        "or crafted; re-create it"), size=_fmt_bytes(info.file_size))
                    break
                if written > limits.max_member_bytes:
                    reason = _member_too_big(written, limits)
                    break
                out.write(chunk)
    except NotImplementedError as exc:
        reason = Message(N_("uses an unsupported compression method ({error}) — re-create the zip with standard "
                            "compression"), error=str(exc))
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        reason = Message(N_("corrupt data in the archive ({error}) — re-create the zip and upload again"),
                         error=str(exc))
    except OSError as exc:
        reason = Message(N_("cannot be written ({error})"), error=str(exc.strerror or exc))
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if reason is not None:
        target.unlink(missing_ok=True)
    return reason
