"""DICOM series as volumes: a folder of slices read as one 3D image, its geometry in RAS+.

DICOM places voxels in the patient's LPS+ frame (+x to the patient's left,
+y posterior); nibabel and the rest of medsynth use RAS+. The affine of a
series is therefore SimpleITK's LPS index-to-point mapping with x and y
negated, the same affine nibabel reads from the series converted to NIfTI
(e.g. by SimpleITK or dcm2niix), so a volume keeps its place in the scanner
whichever way it came in. Voxel axes are DICOM's: columns, rows, slices in
order of position along the slice normal (never file names or instance
numbers). Stored values are rescaled with each slice's slope and intercept
(HU for CT).

A series that cannot be one regular grid is refused, naming the folder:
missing slices (uneven spacing along the normal), mixed orientations or
sizes, a gantry tilt (slices sheared along the normal), a series that is not
an image (RT structure sets, segmentations, reports), pixel data the reader
cannot decode. Localizer (scout) images that share the series' UID are left
out: they are never part of the volume, and no series UID could separate them.
"""

from __future__ import annotations

import functools
import locale
import struct
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from medsynth.io.volume import Volume, VolumeError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
# Modalities of series that hold no image grid (structures, segmentations, plans, documents).
NOT_IMAGES = {"RTSTRUCT", "RTPLAN", "RTRECORD", "SEG", "SR", "PR", "KO", "REG", "DOC", "PLAN"}
# Scanners round positions to a few decimals (0.625 mm slices written as -99.38, -98.75, ...): a step may
# differ from the median by this much (the larger of the two) and still be regular; a missing slice is +100 %.
POSITION_TOL = 0.1  # of the slice spacing
POSITION_TOL_MM = 0.05
# In-plane drift over the whole series, fitted as a line (a tilt shears every slice by the same step), above
# which the series is refused as tilted: rounding moves single slices, never the fitted line this far.
TILT_TOL_MM = 0.1
# Transfer syntaxes the GDCM inside SimpleITK decodes: native, deflated, JPEG (baseline, extended,
# lossless), JPEG-LS, JPEG 2000, RLE. Newer ones (HTJ2K, JPEG XL, video) it reads as garbage or not at all.
DECODABLE = {
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.5",
}
DECOMPRESS_HINT = ("decompress the series first (e.g. gdcmconv --raw, or dcmdjpeg for JPEG) and point the "
                   "cases table at the decompressed copy")


@dataclass(frozen=True)
class SliceHeader:
    file: str
    modality: str
    position: np.ndarray  # ImagePositionPatient, LPS mm
    orientation: np.ndarray  # ImageOrientationPatient: row and column direction cosines
    size: tuple[int, int]  # Rows, Columns
    rescale: tuple[str, str] = ("", "")  # RescaleSlope, RescaleIntercept as written
    localizer: bool = False  # ImageType (0008,0008) names it LOCALIZER: a scout view, not a slice of the volume


@contextmanager
def keep_locale():
    """GDCM (inside SimpleITK) sets the process's locale to "C" when it reads or writes DICOM; Python then
    opens every later text file as ASCII (a log line with a progress bar fails to decode). Put it back."""
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        locale.setlocale(locale.LC_ALL, saved)


def _keeping_locale(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with keep_locale():
            return func(*args, **kwargs)

    return wrapper


@_keeping_locale
def series_in(folder: Path) -> dict[str, list[str]]:
    """SeriesInstanceUID -> that series' files, sorted by position along the slice normal."""
    return {uid: series_files(folder, uid) for uid in series_ids(folder)}


@_keeping_locale
def series_ids(folder: Path) -> list[str]:
    """The SeriesInstanceUIDs of the folder's readable files, sorted."""
    return sorted(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


@_keeping_locale
def series_files(folder: Path, uid: str) -> list[str]:
    """One series' files, sorted by position along the slice normal (each call scans the whole folder: ask
    only for the series wanted)."""
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))


@_keeping_locale
def load_series(folder: str | Path, series_uid: str | None = None) -> Volume:
    """The DICOM series in ``folder`` (the one with ``series_uid`` when the folder holds several)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise VolumeError(f"{folder}: DICOM folder not found")
    files = _pick_series(folder, series_uid, _undecodable(folder))
    headers = _without_localizers(folder, [_header(folder, f) for f in files])
    _check_grid(folder, headers)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([h.file for h in headers])
    if _fractional_rescale(headers):
        # The reader takes its pixel type from the first slice: integer there, the others' values would be
        # cut to integers (PET and Philips MR scale each slice on its own; 8.094 was read as 8).
        reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        syntax = transfer_syntax(Path(headers[0].file))
        raise VolumeError(f"{folder}: cannot decode the pixel data (transfer syntax {syntax or 'unknown'}); "
                          f"{DECOMPRESS_HINT}") from exc
    array = np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))  # (z, y, x) -> (x, y, z)
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32, copy=False)
    return Volume(array, LPS_TO_RAS @ lps_affine(image), folder)


def lps_affine(image: sitk.Image) -> np.ndarray:
    """SimpleITK's voxel index -> LPS point mapping as a 4 x 4 matrix."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3) @ np.diag(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return affine


def _undecodable(folder: Path) -> dict[str, tuple[str, str | None]]:
    """Files the reader cannot decode -> (their transfer syntax, their SeriesInstanceUID if it can be read).

    The series scanner leaves such files out without a word: in the series read, they would be missing
    slices; in another series of the folder, they are no concern of this one.
    """
    out = {}
    for f in sorted(p for p in folder.iterdir() if p.is_file()):
        syntax = transfer_syntax(f)
        if syntax is not None and syntax not in DECODABLE:
            out[str(f)] = (syntax, series_uid_of(f))
    return out


def _pick_series(folder: Path, series_uid: str | None, undecodable: dict[str, tuple[str, str | None]]) -> list[str]:
    series = series_ids(folder)
    others = {uid for _, uid in undecodable.values() if uid not in series}
    if series_uid is None and len(series) + len(others) == 1:
        series_uid = next(iter(series), None) or next(iter(others), None)
    # Undecodable files of the series read, or of a series that cannot be told, would be missing slices.
    blocking = [(f, syntax) for f, (syntax, uid) in undecodable.items() if uid is None or uid == series_uid]
    if blocking:
        name, syntax = Path(blocking[0][0]).name, blocking[0][1]
        raise VolumeError(f"{folder}: {name} is encoded in transfer syntax {syntax}, which the DICOM reader cannot "
                          f"decode; {DECOMPRESS_HINT}")
    if not series:
        raise VolumeError(f"{folder}: no DICOM series found; is this the folder of a series' slice files?")
    if series_uid:
        if series_uid not in series:
            held = _describe(series_in(folder), undecodable)
            raise VolumeError(f"{folder}: no series {series_uid!r}; it holds {held}")
        return series_files(folder, series_uid)
    held = _describe(series_in(folder), undecodable)
    raise VolumeError(f"{folder}: {len(series) + len(others)} DICOM series, {held}; give "
                      "the one to use as its SeriesInstanceUID in the cases table (column image_series, "
                      "label_series or mask_series)")


def _without_localizers(folder: Path, headers: list[SliceHeader]) -> list[SliceHeader]:
    """The series' slices without its localizer images, in order of position along their normal (the
    scanner ordered them along the first file's normal, which may have been a localizer's)."""
    kept = [h for h in headers if not h.localizer]
    if not kept:
        raise VolumeError(f"{folder}: the series holds only localizer (scout) images; point the table at the "
                          "axial series")
    if len(kept) == len(headers):
        return headers
    normal = np.cross(kept[0].orientation[:3], kept[0].orientation[3:])
    return sorted(kept, key=lambda h: float(h.position @ normal))


def _describe(series: dict[str, list[str]], undecodable: dict[str, tuple[str, str | None]]) -> str:
    bad: dict[str, list[str]] = {}  # series UID -> transfer syntaxes of its undecodable files
    for syntax, uid in undecodable.values():
        bad.setdefault(uid, []).append(syntax)
    parts = []
    for uid in sorted(set(series) | set(bad)):
        files = series.get(uid, [])
        meta = _tags(files[0], ("0008|0060", "0008|103e")) if files else {"0008|0060": "", "0008|103e": ""}
        count = len(set(files) | {f for f, (_, u) in undecodable.items() if u == uid})
        note = (f", {len(bad[uid])} in transfer syntax {bad[uid][0]}, which the reader cannot decode"
                if uid in bad else "")
        parts.append(f"{uid} ({meta['0008|0060'] or '?'}, {meta['0008|103e'] or 'no description'}, "
                     f"{count} file(s){note})")
    return "; ".join(parts)


def _tags(file: str, keys: tuple[str, ...]) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return dict.fromkeys(keys, "")
    return {k: reader.GetMetaData(k).strip() if reader.HasMetaDataKey(k) else "" for k in keys}


def _fractional_rescale(headers: list[SliceHeader]) -> bool:
    """True when the slices' rescale slopes or intercepts differ, or one is not a whole number."""
    if len({h.rescale for h in headers}) > 1:
        return True
    try:
        return any(v and not float(v).is_integer() for v in headers[0].rescale)
    except ValueError:
        return True


def _header(folder: Path, file: str) -> SliceHeader:
    keys = ("0008|0060", "0020|0032", "0020|0037", "0028|0010", "0028|0011", "0028|1053", "0028|1052", "0008|0008")
    tags = _tags(file, keys)
    modality = tags["0008|0060"].upper()
    if modality in NOT_IMAGES or not (tags["0020|0032"] and tags["0020|0037"] and tags["0028|0010"]):
        raise VolumeError(f"{folder}: {Path(file).name} is not an image slice (modality {modality or 'unknown'}, "
                          "no image position, orientation or pixel rows); point the table at the image series, "
                          "and give RT structure sets or segmentations as label maps converted to NIfTI")
    try:
        position = np.array([float(v) for v in tags["0020|0032"].split("\\")])
        orientation = np.array([float(v) for v in tags["0020|0037"].split("\\")])
        size = (int(tags["0028|0010"]), int(tags["0028|0011"]))
    except ValueError as exc:
        raise VolumeError(f"{folder}: {Path(file).name} has an unreadable position or orientation ({exc})") from exc
    if position.shape != (3,) or orientation.shape != (6,):
        raise VolumeError(f"{folder}: {Path(file).name} has a malformed image position or orientation")
    localizer = "LOCALIZER" in tags["0008|0008"].upper().split("\\")
    return SliceHeader(file, modality, position, orientation, size, (tags["0028|1053"], tags["0028|1052"]), localizer)


def _check_grid(folder: Path, headers: list[SliceHeader]) -> None:
    """Refuse what would not be one regular grid (see the module)."""
    if len(headers) < 2:
        raise VolumeError(f"{folder}: the series has {len(headers)} slice(s); a volume needs several")
    first = headers[0]
    for h in headers[1:]:
        if not np.allclose(h.orientation, first.orientation, atol=1e-4):
            raise VolumeError(f"{folder}: mixed slice orientations ({Path(first.file).name}: {first.orientation}, "
                              f"{Path(h.file).name}: {h.orientation}); a series must be one stack of parallel "
                              "slices: move the slices of each orientation into a folder of their own (dcm2niix "
                              "also writes one volume per orientation)")
        if h.size != first.size:
            raise VolumeError(f"{folder}: mixed slice sizes ({Path(first.file).name}: {first.size}, "
                              f"{Path(h.file).name}: {h.size}); move the slices of each size into a folder of "
                              "their own")
    normal = np.cross(first.orientation[:3], first.orientation[3:])
    positions = np.stack([h.position for h in headers])
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    spacing = float(np.median(along))
    if spacing <= 0 or (np.abs(along) < 1e-3).any():
        raise VolumeError(f"{folder}: two slices share one position; remove duplicates (or split the series)")
    uneven = np.abs(along - spacing) > max(POSITION_TOL * spacing, POSITION_TOL_MM)
    if uneven.any():
        i = int(np.argmax(uneven))
        raise VolumeError(f"{folder}: uneven slice spacing ({along[i]:.4g} mm between {Path(headers[i].file).name} "
                          f"and {Path(headers[i + 1].file).name}, {spacing:.4g} mm elsewhere): slices are missing; "
                          "complete the series or resample it to a regular grid")
    _check_tilt(folder, positions, normal, spacing)


def _check_tilt(folder: Path, positions: np.ndarray, normal: np.ndarray, spacing: float) -> None:
    """Refuse slices sheared along the normal: their in-plane offsets, fitted as a line over the slice index
    (one slice's rounding moves no line), drift more than ``TILT_TOL_MM`` over the series."""
    offsets = positions - positions[0]
    offsets -= np.outer(offsets @ normal, normal)
    k = np.arange(len(positions)) - (len(positions) - 1) / 2
    per_slice = (k @ offsets) / (k @ k)  # least-squares slope, mm of in-plane drift per slice
    drift = float(np.linalg.norm(per_slice)) * (len(positions) - 1)
    if drift > TILT_TOL_MM:
        angle = float(np.degrees(np.arctan2(np.linalg.norm(per_slice), spacing)))
        shown = f"{angle:.1f}" if angle >= 1 else f"{angle:.2g}"
        raise VolumeError(f"{folder}: gantry tilt of about {shown} degrees (slices sheared along the normal, "
                          f"{drift:.3g} mm over the series); resample it to an orthogonal grid first (e.g. dcm2niix "
                          "corrects tilt)")


def transfer_syntax(file: Path) -> str | None:
    """The TransferSyntaxUID (0002,0010) of a DICOM file's meta header, read without a decoder."""
    try:
        data = file.read_bytes()[:4096]
    except OSError:
        return None
    if data[128:132] != b"DICM":
        return None
    at = 132
    while at + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, at)
        if group != 0x0002:
            return None
        vr = data[at + 4 : at + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT"):
            (length,), head = struct.unpack_from("<I", data, at + 8), 12
        else:
            (length,), head = struct.unpack_from("<H", data, at + 6), 8
        if element == 0x0010:
            return data[at + head : at + head + length].rstrip(b"\0 ").decode("ascii", "replace")
        at += head + length
    return None


SERIES_UID_TAG = b"\x20\x00\x0e\x00"  # (0020,000E), little endian


def series_uid_of(file: Path, head: int = 65536) -> str | None:
    """The SeriesInstanceUID of a (little endian) DICOM file, read without a decoder; None when it cannot be
    told: no such element in its first ``head`` bytes, or two different ones (one inside a sequence)."""
    try:
        with open(file, "rb") as fh:
            data = fh.read(head)
    except OSError:
        return None
    found = set()
    at = data.find(SERIES_UID_TAG, 132)
    while at >= 0 and at + 8 <= len(data):
        if data[at + 4 : at + 6] == b"UI":  # explicit VR: 2-byte length
            length, start = struct.unpack_from("<H", data, at + 6)[0], at + 8
        else:  # implicit VR: 4-byte length
            length, start = struct.unpack_from("<I", data, at + 4)[0], at + 8
        value = data[start : start + length].rstrip(b"\0 ")
        if 0 < length <= 64 and value and all(c in b"0123456789." for c in value):
            found.add(value.decode("ascii"))
        at = data.find(SERIES_UID_TAG, at + 4)
    return found.pop() if len(found) == 1 else None
