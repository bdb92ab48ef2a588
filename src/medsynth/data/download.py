"""Download and unpack public datasets without trusting the network or the archive.

Two promises shape this module:

* ``fetch`` never leaves a file at ``dest`` that has not been verified. Bytes go
  to ``dest.part`` first; only a complete, checksum-verified file is renamed into
  place, so a Snakemake rule that sees its output can rely on it. The ``.part``
  file doubles as the resume point: transient failures (dropped connections,
  timeouts, 5xx, 408, 429) are retried with HTTP ``Range`` requests, within one
  call and across runs, so a multi-gigabyte download is never restarted from
  zero just because the connection hiccupped.
* ``extract`` inspects every member before writing anything and refuses the
  whole archive if a single member could land outside the target folder or is
  not a plain file or directory. It unpacks into a sibling staging folder, so a
  failed extraction leaves no half-filled target behind.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import ssl
import stat
import sys
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

log = logging.getLogger(__name__)

# Statuses that say "try again later" rather than "this request is wrong".
RETRY_STATUSES = frozenset({408, 429})
HASH_CHUNK = 1 << 20
USER_AGENT = "medsynth-download/1"


class DownloadError(RuntimeError):
    """The file could not be obtained: network failure after retries, HTTP 4xx or a size mismatch."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected checksum."""


class UnsafeArchiveError(ValueError):
    """An archive member could escape the target folder or is not a plain file or directory."""


class _Transient(Exception):
    """A failure worth retrying; carries a human-readable reason for the final error message."""


# --------------------------------------------------------------------------- fetch


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    retries: int = 5,
    backoff: float = 2.0,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
) -> Path:
    """Download ``url`` (``https``, ``http``, ``file`` or a plain local path) to ``dest``, verified.

    ``dest`` only ever appears once its size (``size``) and checksums (``sha256``,
    ``md5``; hex, any case) match; on a mismatch the partial file is deleted and
    ``ChecksumError`` / ``DownloadError`` is raised. An existing ``dest`` that
    verifies is returned without touching the network (with no checksum or size
    given, existence is taken as proof). Transient HTTP failures are retried
    ``retries`` times, sleeping ``backoff * 2**attempt`` seconds, resuming from
    ``dest.part``; other 4xx statuses fail at once.

    If the download resumed a ``.part`` left by an earlier run and the result then
    fails verification, that ``.part`` probably belonged to another version of
    the file, so it is discarded and the file downloaded once more from zero
    before giving up.
    """
    dest = Path(dest)
    source = _local_source(url)  # validates the scheme before any file is touched
    expected = _expected_hashes(url, sha256=sha256, md5=md5)
    if dest.exists():
        if _matches(dest, expected, size):
            return dest
        log.info("%s exists but does not verify against %s; downloading it again", dest, url)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    def transfer() -> None:
        if source is not None:
            _copy_local(source, url, part, chunk_size=chunk_size, progress=progress)
        else:
            _download_with_retries(
                url,
                part,
                size=size,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                chunk_size=chunk_size,
                progress=progress,
            )

    resumed_earlier_run = source is None and part.is_file() and part.stat().st_size > 0
    transfer()
    try:
        _verify_or_discard(part, url, expected, size)
    except DownloadError as exc:
        if not resumed_earlier_run:
            raise
        log.warning("%s; the .part from an earlier run was stale, downloading from scratch", exc)
        transfer()
        _verify_or_discard(part, url, expected, size)
    os.replace(part, dest)
    return dest


def _local_source(url: str) -> Path | None:
    """The local file behind a ``file://`` URL or plain path; None for http(s); ValueError otherwise."""
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        return None
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url}: file:// URLs on another host are not supported; mount it and use a local path")
        return Path(urllib.request.url2pathname(parsed.path))
    # One-letter "schemes" are Windows drive letters (C:\data\x.zip), i.e. plain paths.
    if scheme == "" or len(scheme) == 1:
        return Path(url)
    raise ValueError(f"{url}: unsupported URL scheme {scheme!r}; use https://, http://, file:// or a local path")


def _expected_hashes(url: str, *, sha256: str | None, md5: str | None) -> dict[str, str]:
    """Normalised expected digests; a malformed one is a config error, reported before downloading."""
    expected: dict[str, str] = {}
    for algo, value, length in (("sha256", sha256, 64), ("md5", md5, 32)):
        if value is None:
            continue
        value = value.strip().lower()
        if not re.fullmatch(f"[0-9a-f]{{{length}}}", value):
            raise ValueError(
                f"{url}: expected {algo} {value!r} is not {length} hex digits; fix the checksum in the config"
            )
        expected[algo] = value
    return expected


def hash_file(path: Path, algos: list[str]) -> dict[str, str]:
    """Digests of the whole file; hashing after the fact keeps resume and retries simple."""
    hashers = {algo: hashlib.new(algo) for algo in algos}
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            for h in hashers.values():
                h.update(chunk)
    return {algo: h.hexdigest() for algo, h in hashers.items()}


def _matches(path: Path, expected: dict[str, str], size: int | None) -> bool:
    """Whether an existing file is the one asked for (size first: it is free)."""
    if size is not None and path.stat().st_size != size:
        return False
    return not expected or hash_file(path, list(expected)) == expected


def _verify_or_discard(part: Path, url: str, expected: dict[str, str], size: int | None) -> None:
    """Raise (after deleting ``part``) unless it has the expected size and digests."""
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise DownloadError(
            f"{url}: expected {size} bytes but received {got_size}; the partial file was deleted. "
            "Run again; if it persists the file on the server changed, so update size (and checksum) in the config"
        )
    if not expected:
        return
    got = hash_file(part, list(expected))
    for algo, want in expected.items():
        if got[algo] != want:
            part.unlink()
            raise ChecksumError(
                f"{url}: {algo} mismatch: expected {want}, got {got[algo]}; the download was deleted. "
                "Run again; if it persists the file on the server changed, so check it and update the checksum"
            )


def _progress_bar(total: int | None, initial: int, name: str, enabled: bool) -> tqdm:
    # sys.stderr is looked up per call because medsynth.io.logs.log_to swaps it for the log file.
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        file=sys.stderr,
        disable=not enabled,
    )


def _copy_local(source: Path, url: str, part: Path, *, chunk_size: int, progress: bool) -> None:
    """Stream a local file into ``part``; local reads do not fail transiently, so no retries."""
    if not source.is_file():
        raise DownloadError(f"{url}: local file {source} does not exist or is not a file; check the path in the config")
    with (
        source.open("rb") as src,
        part.open("wb") as out,
        _progress_bar(source.stat().st_size, 0, source.name, progress) as bar,
    ):
        while chunk := src.read(chunk_size):
            out.write(chunk)
            bar.update(len(chunk))


def _download_with_retries(
    url: str,
    part: Path,
    *,
    size: int | None,
    retries: int,
    backoff: float,
    timeout: float,
    chunk_size: int,
    progress: bool,
) -> None:
    """Attempt the transfer up to ``retries + 1`` times, each attempt resuming from ``part``."""
    for attempt in range(retries + 1):
        try:
            _download_once(url, part, size=size, timeout=timeout, chunk_size=chunk_size, progress=progress)
            return
        except _Transient as exc:
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise DownloadError(
                    f"{url}: download failed after {retries + 1} attempt(s), last error: {exc}. "
                    f"Check the network and the URL, then run again; {kept} bytes are kept in {part} "
                    "and the next run resumes from there"
                ) from exc
            delay = backoff * 2**attempt
            log.warning("%s: %s; retrying in %.2f s (attempt %d of %d)", url, exc, delay, attempt + 2, retries + 1)
            time.sleep(delay)


def _download_once(url: str, part: Path, *, size: int | None, timeout: float, chunk_size: int, progress: bool) -> None:
    """One HTTP request that appends to ``part`` (or restarts it); raises _Transient on retryable failures."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()  # longer than the whole file: not a prefix of it
        offset = 0
    if size is not None and offset == size and offset > 0:
        return  # complete already; verification decides whether it is right
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset and _range_total(exc.headers.get("Content-Range")) == offset:
            return  # our .part already holds every byte
        if exc.code == 416 and offset:
            part.unlink()
            raise _Transient(f"server rejected resuming at byte {offset}; restarting from zero") from exc
        if exc.code >= 500 or exc.code in RETRY_STATUSES:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from exc
        raise DownloadError(
            f"{url}: HTTP {exc.code} {exc.reason}; the server refused the request, check the URL "
            "(and any access requirements of the dataset) in the config"
        ) from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ssl.SSLCertVerificationError):
            raise DownloadError(
                f"{url}: TLS certificate verification failed ({exc.reason}); fix the system CA certificates"
            ) from exc
        raise _Transient(f"cannot connect ({exc.reason})") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Transient(f"connection failed ({exc!r})") from exc

    with response:
        if response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"asked for bytes from {offset}, server sent a range starting at {start}; restarting")
            mode = "ab"
        else:
            # A 200 answer to a Range request means the server sends everything again.
            offset, mode = 0, "wb"
        length = response.headers.get("Content-Length")
        expected_end = offset + int(length) if length and length.isdigit() else size
        received = _stream(response, part, mode, offset, expected_end, chunk_size, progress)
    if length and length.isdigit() and received < int(length):
        raise _Transient(f"connection closed after {received} of {length} bytes")


def _stream(
    response: BinaryIO, part: Path, mode: str, offset: int, total: int | None, chunk_size: int, progress: bool
) -> int:
    """Copy the body into ``part``; bytes written survive any failure, so the next attempt resumes."""
    received = 0
    with part.open(mode) as out, _progress_bar(total, offset, part.name.removesuffix(".part"), progress) as bar:
        while True:
            try:
                chunk = response.read(chunk_size)
            except (OSError, http.client.HTTPException) as exc:
                # Only read errors are transient; a full disk on write must not be retried as a network fault.
                raise _Transient(f"connection lost after {offset + received} bytes ({exc!r})") from exc
            if not chunk:
                return received
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))


def _range_start(content_range: str | None) -> int | None:
    """First byte of ``Content-Range: bytes START-END/TOTAL``."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", content_range or "")
    return int(m.group(1)) if m else None


def _range_total(content_range: str | None) -> int | None:
    """Total size in a 416's ``Content-Range: bytes */TOTAL``."""
    m = re.fullmatch(r"\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*", content_range or "")
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------- extract


def extract(archive: Path, target: Path) -> Path:
    """Unpack a zip or tar (plain, gz, bz2, xz; detected by content) into ``target``; return ``target``.

    Every member is checked before anything is written, and the whole archive is
    refused (``UnsafeArchiveError`` naming the member) if any member has an
    absolute path, a Windows drive letter or leading backslash, a ``..``
    component, or is anything but a regular file or a directory. That includes
    *all* symbolic and hard links, even ones that stay inside the tree: proving a
    chain of links harmless is subtle, and dataset archives do not need them.

    Members are unpacked into ``<target>.extracting`` next to ``target`` and moved
    into ``target`` only after extraction succeeded; top-level entries of the
    same name already in ``target`` are replaced. On any failure the staging
    folder is removed and ``target`` is left as it was.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive does not exist; download it first (or check the path)")
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
    try:
        unpack(archive, staging)
        _move_contents(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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
            # Unix zips keep st_mode in the high 16 bits; 0 there means "no type recorded" (e.g. Windows).
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise _refuse(archive, info.filename, "is a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _refuse(archive, info.filename, "is a special file (device, FIFO or socket)")
        staging.mkdir(parents=True)
        zf.extractall(staging)


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


def _move_contents(staging: Path, target: Path) -> None:
    """Move the unpacked entries into ``target``, replacing same-named ones (a re-extraction)."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(staging.iterdir()):
        dest = target / entry.name
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        elif dest.exists() or dest.is_symlink():
            dest.unlink()
        os.replace(entry, dest)
