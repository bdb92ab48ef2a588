"""fetch and extract against a real local HTTP server and hand-made hostile archives.

The server runs on 127.0.0.1 inside the test process and can be scripted to fail
the way real mirrors do (503s, connections cut mid-body, no Range support), so
the retry and resume logic is exercised over actual sockets, never mocked.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import stat
import tarfile
import threading
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medsynth.data.archives import UnsafeArchiveError, extract
from medsynth.data.download import ChecksumError, DownloadError, fetch

PAYLOAD = os.urandom(200 * 1024)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()
FAST = {"backoff": 0.01, "timeout": 5.0, "progress": False}


# --------------------------------------------------------------------------- scripted server


@dataclass
class Script:
    """How the server misbehaves, and what it saw; tests set the knobs and read the records."""

    payload: bytes = PAYLOAD
    fail_first: int = 0  # answer this many requests with 503
    cut_first_at: int | None = None  # first request: full Content-Length, then only this many body bytes
    ignore_range: bool = False  # always 200 with the full body
    not_found: bool = False
    ranges: list[str | None] = field(default_factory=list)  # Range header of every request
    sent: list[int] = field(default_factory=list)  # body bytes written per request
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so a cut body cannot be mistaken for keep-alive.
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        script: Script = self.server.script  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        with script.lock:
            script.ranges.append(rng)
            n = len(script.ranges)
        if self.path != "/data.bin" or script.not_found:
            return self._empty(404, script)
        if n <= script.fail_first:
            return self._empty(503, script)
        total = len(script.payload)
        start, status = 0, 200
        if rng and not script.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= total:
                return self._empty(416, script, {"Content-Range": f"bytes */{total}"})
            status = 206
        body = script.payload[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if not script.ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()
        if n == 1 and script.cut_first_at is not None:
            body = body[: script.cut_first_at]
        # Recorded before writing: the client may finish reading before this thread runs on.
        with script.lock:
            script.sent.append(len(body))
        self.wfile.write(body)
        self.wfile.flush()
        if n == 1 and script.cut_first_at is not None:
            self.connection.shutdown(socket.SHUT_RDWR)  # the client sees EOF before Content-Length

    def _empty(self, status: int, script: Script, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        with script.lock:
            script.sent.append(0)
        self.end_headers()


@dataclass
class Server:
    script: Script
    url: str


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.script = Script()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Server(httpd.script, f"http://127.0.0.1:{httpd.server_address[1]}/data.bin")  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def part_of(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


# --------------------------------------------------------------------------- fetch


def test_good_download_verifies_and_second_call_stays_offline(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "data.bin"
    out = fetch(server.url, dest, sha256=PAYLOAD_SHA256.upper(), md5=PAYLOAD_MD5, size=len(PAYLOAD), **FAST)
    assert out == dest and dest.read_bytes() == PAYLOAD
    assert not part_of(dest).exists()
    assert server.script.ranges == [None]

    fetch(server.url, dest, sha256=PAYLOAD_SHA256, **FAST)
    fetch(server.url, dest, **FAST)  # no checksum: existence is enough
    assert len(server.script.ranges) == 1


def test_progress_bar_goes_to_stderr(server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fetch(server.url, tmp_path / "data.bin", sha256=PAYLOAD_SHA256, backoff=0.01, progress=True)
    assert "data.bin" in capsys.readouterr().err


def test_checksum_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    wrong = "0" * 64
    with pytest.raises(ChecksumError) as info:
        fetch(server.url, dest, sha256=wrong, **FAST)
    message = str(info.value)
    assert server.url in message and wrong in message and PAYLOAD_SHA256 in message and "sha256" in message
    assert not dest.exists() and not part_of(dest).exists()


def test_md5_mismatch_is_a_checksum_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ChecksumError, match="md5"):
        fetch(server.url, tmp_path / "data.bin", sha256=PAYLOAD_SHA256, md5="f" * 32, **FAST)


def test_connection_cut_mid_file_resumes_with_range(server: Server, tmp_path: Path) -> None:
    cut = 70_000
    server.script.cut_first_at = cut
    dest = tmp_path / "data.bin"
    fetch(server.url, dest, sha256=PAYLOAD_SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.script.ranges == [None, f"bytes={cut}-"]
    assert server.script.sent[0] == cut
    assert sum(server.script.sent[1:]) == len(PAYLOAD) - cut  # resumed, not restarted


def test_503_twice_then_success(server: Server, tmp_path: Path) -> None:
    server.script.fail_first = 2
    dest = fetch(server.url, tmp_path / "data.bin", sha256=PAYLOAD_SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.script.ranges) == 3


def test_retries_exhausted_names_url_and_attempts(server: Server, tmp_path: Path) -> None:
    server.script.fail_first = 100
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=re.escape(server.url)) as info:
        fetch(server.url, dest, retries=2, **FAST)
    assert "3 attempt" in str(info.value) and "503" in str(info.value)
    assert len(server.script.ranges) == 3
    assert not dest.exists()


def test_404_fails_at_once(server: Server, tmp_path: Path) -> None:
    server.script.not_found = True
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError) as info:
        fetch(server.url, dest, **FAST)
    assert not isinstance(info.value, ChecksumError)
    assert server.url in str(info.value) and "404" in str(info.value)
    assert len(server.script.ranges) == 1
    assert not dest.exists()


def test_part_from_earlier_run_is_resumed(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    half = len(PAYLOAD) // 2
    part_of(dest).write_bytes(PAYLOAD[:half])
    fetch(server.url, dest, sha256=PAYLOAD_SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.script.ranges == [f"bytes={half}-"]
    assert server.script.sent == [len(PAYLOAD) - half]
    assert not part_of(dest).exists()


def test_complete_part_answered_416_is_verified(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(PAYLOAD)
    fetch(server.url, dest, sha256=PAYLOAD_SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.script.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_stale_part_from_earlier_run_is_replaced_once(server: Server, tmp_path: Path) -> None:
    # A .part from another version of the file: resuming yields the wrong hash, so one fresh download follows.
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(b"\x00" * 1000)
    fetch(server.url, dest, sha256=PAYLOAD_SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.script.ranges == ["bytes=1000-", None]


def test_server_without_range_support_restarts_cleanly(server: Server, tmp_path: Path) -> None:
    server.script.ignore_range = True
    dest = tmp_path / "data.bin"
    part_of(dest).write_bytes(b"garbage that is not a prefix of the payload")
    fetch(server.url, dest, sha256=PAYLOAD_SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert len(server.script.ranges) == 1 and server.script.ranges[0] is not None  # asked, got 200


def test_cut_on_server_without_range_support_restarts(server: Server, tmp_path: Path) -> None:
    server.script.ignore_range = True
    server.script.cut_first_at = 50_000
    dest = fetch(server.url, tmp_path / "data.bin", sha256=PAYLOAD_SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.script.ranges == [None, "bytes=50000-"]
    assert server.script.sent[1] == len(PAYLOAD)


def test_size_mismatch_leaves_nothing(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match=re.escape(server.url)) as info:
        fetch(server.url, dest, size=len(PAYLOAD) + 1, **FAST)
    assert not isinstance(info.value, ChecksumError)
    assert str(len(PAYLOAD) + 1) in str(info.value)
    assert not dest.exists() and not part_of(dest).exists()


def test_existing_dest_that_fails_verification_is_downloaded_again(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "data.bin"
    dest.write_bytes(b"truncated")
    fetch(server.url, dest, sha256=PAYLOAD_SHA256, **FAST)
    assert dest.read_bytes() == PAYLOAD
    assert server.script.ranges == [None]


def test_file_url_and_plain_path_are_copied_and_verified(tmp_path: Path) -> None:
    source = tmp_path / "source dir" / "data.bin"
    source.parent.mkdir()
    source.write_bytes(PAYLOAD)
    a = fetch(source.as_uri(), tmp_path / "a.bin", sha256=PAYLOAD_SHA256, size=len(PAYLOAD), **FAST)
    b = fetch(str(source), tmp_path / "b.bin", md5=PAYLOAD_MD5, **FAST)
    assert a.read_bytes() == PAYLOAD and b.read_bytes() == PAYLOAD
    with pytest.raises(ChecksumError, match="expected 0{64}"):
        fetch(source.as_uri(), tmp_path / "c.bin", sha256="0" * 64, **FAST)
    assert not (tmp_path / "c.bin").exists() and not (tmp_path / "c.bin.part").exists()
    with pytest.raises(DownloadError, match="missing.bin"):
        fetch(str(tmp_path / "missing.bin"), tmp_path / "d.bin", **FAST)


def test_unsupported_scheme_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ftp://example.org/x.zip"):
        fetch("ftp://example.org/x.zip", tmp_path / "x.zip", **FAST)


# --------------------------------------------------------------------------- extract


def make_zip(path: Path, members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for info, data in members:
            zf.writestr(info, data)
    return path


def make_tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def tar_entry(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def zip_info(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    if mode is not None:
        info.external_attr = mode << 16
    return info


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty folder that is the target's parent; after a refusal it must stay empty."""
    (tmp_path / "archives").mkdir()
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


def assert_nothing_written(tmp_path: Path, work: Path) -> None:
    assert list(work.iterdir()) == []  # neither target nor the .extracting staging folder
    written = [p for p in tmp_path.parent.rglob("*") if p.name in ("evil.txt", "outside")]
    assert written == []


ABS_NAME = f"/tmp/medsynth-test-{uuid.uuid4().hex}.txt"


@pytest.mark.parametrize(
    ("member", "reported", "why"),
    [
        (zip_info("../evil.txt"), "../evil.txt", "'..'"),
        (zip_info("data/../../evil.txt"), "data/../../evil.txt", "'..'"),
        (zip_info(ABS_NAME), ABS_NAME, "absolute"),
        (zip_info("C:/evil.txt"), "C:/evil.txt", "drive letter"),
        (zip_info("\\evil.txt"), "\\\\evil.txt", "absolute"),  # repr() of the name doubles the backslash
        (zip_info("..\\evil.txt"), "..\\\\evil.txt", "'..'"),
        (zip_info("link", stat.S_IFLNK | 0o777), "link", "symbolic link"),
        (zip_info("fifo", stat.S_IFIFO | 0o644), "fifo", "special file"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "backslash", "dotdot-backslash", "symlink", "fifo"],
)
def test_unsafe_zip_is_refused_whole(
    tmp_path: Path, work: Path, member: zipfile.ZipInfo, reported: str, why: str
) -> None:
    # The bad member comes last: refusing it must still mean the good one before it was not written.
    archive = make_zip(tmp_path / "archives" / "a.zip", [("good.txt", b"fine"), (member, b"payload")])
    with pytest.raises(UnsafeArchiveError) as info:
        extract(archive, work / "out")
    assert reported in str(info.value) and why in str(info.value) and str(archive) in str(info.value)
    assert_nothing_written(tmp_path, work)
    assert not Path(ABS_NAME).exists()


@pytest.mark.parametrize(
    ("member", "reported", "why"),
    [
        (("../evil.txt", b"x"), "../evil.txt", "'..'"),
        (("/tmp/" + Path(ABS_NAME).name, b"x"), ABS_NAME, "absolute"),
        (tar_entry("passwd", tarfile.SYMTYPE, "/etc/passwd"), "passwd", "symbolic link"),
        (tar_entry("up", tarfile.SYMTYPE, "../../outside"), "up", "symbolic link"),
        (tar_entry("hard", tarfile.LNKTYPE, "../../outside"), "hard", "hard link"),
        (tar_entry("tty", tarfile.CHRTYPE), "tty", "device"),
        (tar_entry("disk", tarfile.BLKTYPE), "disk", "device"),
        (tar_entry("pipe", tarfile.FIFOTYPE), "pipe", "FIFO"),
    ],
    ids=["dotdot", "absolute", "symlink-abs", "symlink-up", "hardlink", "chardev", "blockdev", "fifo"],
)
def test_unsafe_tar_is_refused_whole(
    tmp_path: Path, work: Path, member: tarfile.TarInfo | tuple[str, bytes], reported: str, why: str
) -> None:
    archive = make_tar(tmp_path / "archives" / "a.tar", [("good.txt", b"fine"), member])
    with pytest.raises(UnsafeArchiveError) as info:
        extract(archive, work / "out")
    assert reported in str(info.value) and why in str(info.value)
    assert_nothing_written(tmp_path, work)
    assert not Path(ABS_NAME).exists()


def test_safe_relative_symlink_in_tar_is_refused_too(tmp_path: Path, work: Path) -> None:
    archive = make_tar(
        tmp_path / "archives" / "a.tar.gz",
        [("data/a.txt", b"a"), tar_entry("data/alias.txt", tarfile.SYMTYPE, "a.txt")],
        mode="w:gz",
    )
    with pytest.raises(UnsafeArchiveError, match="data/alias.txt"):
        extract(archive, work / "out")
    assert_nothing_written(tmp_path, work)


TREE = {
    "dataset/README.txt": b"read me",
    "dataset/images/case_001.nii.gz": os.urandom(3000),
    "dataset/images/case_002.nii.gz": os.urandom(3000),
    "dataset/labels/deep/er/case_001.nii.gz": b"\x00\x01" * 500,
}


def tree_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_good_zip_extracts_completely(tmp_path: Path, work: Path) -> None:
    members: list[tuple[zipfile.ZipInfo | str, bytes]] = [(zip_info("dataset/", stat.S_IFDIR | 0o755), b"")]
    members += [(zip_info(name, stat.S_IFREG | 0o644), data) for name, data in TREE.items()]
    archive = make_zip(tmp_path / "archives" / "good.zip", members)
    out = extract(archive, work / "out")
    assert out == work / "out"
    assert tree_of(out) == TREE
    assert sorted(p.name for p in work.iterdir()) == ["out", "out.unpacked.json"]  # staging folder gone


@pytest.mark.parametrize("mode", ["w:gz", "w:bz2", "w:xz", "w"])
def test_good_tar_extracts_completely(tmp_path: Path, work: Path, mode: str) -> None:
    dirs = [tar_entry("dataset", tarfile.DIRTYPE), tar_entry("dataset/images", tarfile.DIRTYPE)]
    archive = make_tar(tmp_path / "archives" / "good.tar.any", [*dirs, *TREE.items()], mode=mode)
    out = extract(archive, work / "nested" / "out")
    assert tree_of(out) == TREE
    assert sorted(p.name for p in (work / "nested").iterdir()) == ["out", "out.unpacked.json"]


def test_reextracting_leaves_only_the_new_archives_tree(tmp_path: Path, work: Path) -> None:
    """A new version of the archive (a case withdrawn from the release): what only the old one held goes."""
    target = work / "out"
    (target / "dataset").mkdir(parents=True)
    (target / "dataset" / "withdrawn_case.nii.gz").write_bytes(b"old")
    (target / "old_top_level.txt").write_bytes(b"old")
    archive = make_tar(tmp_path / "archives" / "good.tgz", list(TREE.items()), mode="w:gz")
    extract(archive, target)
    assert tree_of(target) == TREE
    assert sorted(p.name for p in work.iterdir()) == ["out", "out.unpacked.json"]


def test_the_same_archive_is_not_unpacked_again(tmp_path: Path, work: Path) -> None:
    """A download run again (forced, or its script updated) would write every image again, and their new
    times would rerun every case's preprocessing: the same archive file, its whole tree there, is left."""
    archive = make_tar(tmp_path / "archives" / "good.tgz", list(TREE.items()), mode="w:gz")
    target = extract(archive, work / "out")
    image = target / "dataset/images/case_001.nii.gz"
    os.utime(image, ns=(1, 1))
    assert extract(archive, target) == target and image.stat().st_mtime_ns == 1
    image.write_bytes(b"cut short")  # a file changed in the tree: unpacked again
    extract(archive, target)
    assert tree_of(target) == TREE and image.stat().st_mtime_ns != 1
    os.utime(image, ns=(1, 1))
    (target / "dataset/images/case_002.nii.gz").unlink()  # a file gone: unpacked again
    extract(archive, target)
    assert tree_of(target) == TREE and image.stat().st_mtime_ns != 1
    os.utime(image, ns=(1, 1))
    os.utime(archive, ns=(2, 2))  # another archive at the same path (a new release): unpacked again
    extract(archive, target)
    assert image.stat().st_mtime_ns != 1


def test_a_zip_unpacked_before_the_stamp_existed_is_not_unpacked_again(tmp_path: Path, work: Path) -> None:
    """A run from before the stamp: the zip's directory (names, sizes) against the tree decides."""
    archive = make_zip(tmp_path / "archives" / "good.zip", [(zip_info(n, stat.S_IFREG | 0o644), d)
                                                             for n, d in TREE.items()])
    target = extract(archive, work / "out")
    (work / "out.unpacked.json").unlink()
    image = target / "dataset/images/case_001.nii.gz"
    os.utime(image, ns=(1, 1))
    extract(archive, target)
    assert image.stat().st_mtime_ns == 1 and (work / "out.unpacked.json").is_file()
    (work / "out.unpacked.json").unlink()
    (target / "dataset/extra.txt").write_bytes(b"not in the zip")  # not the zip's tree: unpacked again
    extract(archive, target)
    assert tree_of(target) == TREE and image.stat().st_mtime_ns != 1


def test_a_zip_written_with_backslashes_unpacks_into_its_folders(tmp_path: Path, work: Path) -> None:
    """Old Windows tools store p001\\ct.nii.gz: a file in p001/, not one of that literal name."""
    archive = make_zip(tmp_path / "archives" / "win.zip", [(zip_info(name.replace("/", "\\")), data)
                                                           for name, data in TREE.items()])
    assert tree_of(extract(archive, work / "out")) == TREE


def test_not_an_archive_names_the_file(tmp_path: Path, work: Path) -> None:
    bogus = tmp_path / "archives" / "bogus.zip"
    bogus.write_bytes(b"this is not an archive" * 100)
    with pytest.raises(ValueError, match=re.escape(str(bogus))):
        extract(bogus, work / "out")
    assert list(work.iterdir()) == []
