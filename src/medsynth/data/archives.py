"""Unpacking downloaded archives without trusting them.

``extract`` inspects every member before writing anything and refuses the
whole archive if a single member could land outside the target folder or is
not a plain file or directory. It unpacks into a sibling staging folder, so a
failed extraction leaves no half-filled target behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import stat
import tarfile
import zipfile
from pathlib import Path


log = logging.getLogger(__name__)


class UnsafeArchiveError(ValueError):
    """An archive member could escape the target folder or is not a plain file or directory."""


def extract(archive: Path, target: Path) -> Path:
    """Unpack a zip or tar (plain, gz, bz2, xz; detected by content) into ``target``; return ``target``.

    Every member is checked before anything is written, and the whole archive is
    refused (``UnsafeArchiveError`` naming the member) if any member has an
    absolute path, a Windows drive letter or leading backslash, a ``..``
    component, or is anything but a regular file or a directory. That includes
    *all* symbolic and hard links, even ones that stay inside the tree: proving a
    chain of links harmless is subtle, and dataset archives do not need them.

    Members are unpacked into ``<target>.extracting`` next to ``target``, which
    they replace as a whole only after extraction succeeded: nothing an older
    version of the archive held stays (a case withdrawn from a release would
    otherwise be trained on). On any failure the staging folder is removed and
    ``target`` is left as it was. Zip member names written with backslashes
    (old Windows tools) are unpacked into their folders.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive does not exist; download it first (or check the path)")
    if _unpacked_before(archive, target):
        # The same archive file, every file it gave still there at its size: a rerun of the download (forced,
        # or its script updated) would otherwise write AutoPET's images again, and their new times would
        # rerun every case's preprocessing and all after it.
        log.info("%s: already unpacked into %s (same archive, every file there); not unpacked again", archive, target)
        return target
    # Tar first: a zip detector scans the file's tail and can be fooled by a tar whose last member is a zip.
    if tarfile.is_tarfile(archive):
        unpack = _check_and_unpack_tar
    elif zipfile.is_zipfile(archive):
        unpack = _check_and_unpack_zip
    else:
        raise ValueError(f"{archive}: neither a zip nor a tar archive; check the download or unpack it by hand")

    staging = target.parent / (target.name + ".extracting")
    if staging.exists():
        shutil.rmtree(staging)  # left by a crashed earlier run; it never holds anything we need
    stamp = _stamp_path(target)
    stamp.unlink(missing_ok=True)
    try:
        unpack(archive, staging)
        _replace_target(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _write_stamp(archive, target, _tree_sizes(target))
    return target


def _stamp_path(target: Path) -> Path:
    """What an extraction unpacked, beside (not in) the tree: a layout's patterns never see it."""
    return target.parent / (target.name + ".unpacked.json")


def _unpacked_before(archive: Path, target: Path) -> bool:
    """Whether ``target`` holds what this archive file (same path, size and time) unpacked, all of it."""
    try:
        stamp = json.loads(_stamp_path(target).read_text())
    except (OSError, ValueError):
        return _zip_tree_there(archive, target)
    stat_ = archive.stat()
    if (stamp.get("archive"), stamp.get("size"), stamp.get("mtime_ns")) != (str(archive.resolve()), stat_.st_size,
                                                                           stat_.st_mtime_ns):
        return False
    files = stamp.get("files") or {}
    return bool(files) and all((target / name).is_file() and (target / name).stat().st_size == size
                               for name, size in files.items())


def _zip_tree_there(archive: Path, target: Path) -> bool:
    """Without a stamp (unpacked by an earlier version): whether ``target`` holds exactly a zip's files at their
    sizes (its directory is read, not its data). Then the stamp is written. Unpacking a zip again would give
    every file a new time, and every case's preprocessing would rerun; a tar keeps its members' times."""
    if not target.is_dir() or not zipfile.is_zipfile(archive) or tarfile.is_tarfile(archive):
        return False
    with zipfile.ZipFile(archive) as zf:
        listed = {i.filename.replace("\\", "/"): i.file_size for i in zf.infolist() if not i.is_dir()}
    there = _tree_sizes(target)
    if not listed or listed != there:
        return False
    _write_stamp(archive, target, there)
    return True


def _tree_sizes(target: Path) -> dict[str, int]:
    """Each file under ``target`` (relative, '/'-separated) and its size."""
    return {p.relative_to(target).as_posix(): p.stat().st_size for p in sorted(target.rglob("*")) if p.is_file()}


def _write_stamp(archive: Path, target: Path, files: dict[str, int]) -> None:
    stat_ = archive.stat()
    _stamp_path(target).write_text(json.dumps({"archive": str(archive.resolve()), "size": stat_.st_size,
                                               "mtime_ns": stat_.st_mtime_ns, "files": files}) + "\n")


def _refuse(archive: Path, member: str, why: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{archive}: refusing to extract, member {member!r} {why}; nothing was extracted. "
        "Use an archive from a trusted source, or inspect and unpack this one by hand"
    )


def _name_problem(name: str) -> str | None:
    """Why a member name could point outside the target folder, or None if it cannot."""
    if not name or "\x00" in name:
        return "has an empty or invalid name"
    if name.startswith(("/", "\\")):
        return "has an absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "has a Windows drive letter"
    # Backslashes count as separators too: the archive may have been made on Windows.
    if ".." in re.split(r"[\\/]", name):
        return "has a '..' path component"
    return None


def _check_and_unpack_zip(archive: Path, staging: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if why := _name_problem(info.filename):
                raise _refuse(archive, info.filename, why)
            # p001\ct.nii.gz from an old Windows zip: a file in p001/, not a file of that literal name.
            info.filename = info.filename.replace("\\", "/")
            # Unix zips keep st_mode in the high 16 bits; 0 there means "no type recorded" (e.g. Windows).
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise _refuse(archive, info.filename, "is a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(archive, info.filename, "is a special file (device, FIFO or socket)")
        staging.mkdir(parents=True)
        zf.extractall(staging, members=zf.infolist())


def _tar_member_problem(member: tarfile.TarInfo) -> str | None:
    if why := _name_problem(member.name):
        return why
    if member.issym():
        return f"is a symbolic link (to {member.linkname!r}); links are not extracted"
    if member.islnk():
        return f"is a hard link (to {member.linkname!r}); links are not extracted"
    if member.ischr() or member.isblk():
        return "is a device file"
    if member.isfifo():
        return "is a FIFO"
    if not (member.isreg() or member.isdir()):
        return "is not a regular file or directory"
    return None


def _check_and_unpack_tar(archive: Path, staging: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()  # reads the whole index before anything is written
        for member in members:
            if why := _tar_member_problem(member):
                raise _refuse(archive, member.name, why)
        staging.mkdir(parents=True)
        if hasattr(tarfile, "data_filter"):
            # Defence in depth (Python >= 3.11.4): the stdlib re-checks each member as it writes it.
            tf.extractall(staging, members=members, filter="data")
        else:
            tf.extractall(staging, members=members)


def _replace_target(staging: Path, target: Path) -> None:
    """The unpacked tree becomes ``target``; an earlier extraction there is removed first."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists() or target.is_symlink():
        target.unlink()
    os.replace(staging, target)
