"""Download and unpack public datasets without trusting the network or the archive.

One promise shapes this module:

* ``fetch`` never leaves a file at ``dest`` that has not been verified. Bytes go
  to ``dest.part`` first; only a complete, checksum-verified file is renamed into
  place, so a Snakemake rule that sees its output can rely on it. The ``.part``
  file doubles as the resume point: transient failures (dropped connections,
  timeouts, 5xx, 408, 429) are retried with HTTP ``Range`` requests, within one
  call and across runs, so a multi-gigabyte download is never restarted from
  zero just because the connection hiccupped.
* Archives are unpacked by ``data/archives.extract``, which never trusts them either.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from medsynth.data.same_files import hash_file

log = logging.getLogger(__name__)

# Statuses that say "try again later" rather than "this request is wrong".
RETRY_STATUSES = frozenset({408, 429})
USER_AGENT = "medsynth-download/1"


class DownloadError(RuntimeError):
    """The file could not be obtained: network failure after retries, HTTP 4xx or a size mismatch."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not match the expected checksum."""


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
            _download_with_retries(url, part, size=size, retries=retries, backoff=backoff, timeout=timeout,
                                   chunk_size=chunk_size, progress=progress)

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
