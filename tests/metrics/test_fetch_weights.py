"""fetch_weights: once, verified, and honest about what it could not fetch."""

import hashlib

import pytest

from medsynth.metrics.perceptual import WeightsUnavailable, fetch_weights, weight_path


def source(tmp_path, payload: bytes) -> tuple[str, str]:
    """A weight file served from file://, named after its own SHA-256 prefix as upstream files are."""
    name = f"net-{hashlib.sha256(payload).hexdigest()[:8]}.pth"
    src = tmp_path / "server" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(payload)
    return name, src.as_uri()


def test_fetches_verifies_and_does_not_fetch_again(tmp_path):
    name, url = source(tmp_path, b"weights" * 1000)
    status = fetch_weights(tmp_path / "w", "auto", urls={name: url})
    assert status == {name: "present"}
    assert weight_path(tmp_path / "w", name).read_bytes() == b"weights" * 1000
    (tmp_path / "server" / name).unlink()  # a second run must not need the source
    assert fetch_weights(tmp_path / "w", "auto", urls={name: url}) == {name: "present"}


def test_auto_records_a_failed_download_and_required_stops_naming_the_file(tmp_path):
    urls = {"gone-12345678.pth": (tmp_path / "nowhere.pth").as_uri()}
    status = fetch_weights(tmp_path / "w", "auto", urls=urls)
    assert status["gone-12345678.pth"].startswith("unavailable:")
    with pytest.raises(WeightsUnavailable, match=r"checkpoints/gone-12345678\.pth"):
        fetch_weights(tmp_path / "w", "required", urls=urls)


def test_a_damaged_file_is_reported_not_used(tmp_path):
    name, url = source(tmp_path, b"good")
    target = weight_path(tmp_path / "w", name)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"tampered")
    status = fetch_weights(tmp_path / "w", "auto", urls={name: url})
    assert "does not start with" in status[name]


def test_off_fetches_nothing(tmp_path):
    name, url = source(tmp_path, b"x")
    assert fetch_weights(tmp_path / "w", "off", urls={name: url})[name].startswith("not fetched")
    assert not weight_path(tmp_path / "w", name).exists()
