"""The integrity record of an export: the SHA-256 of every file, checked before a model answers.

`keras-vit export` writes `SHA256SUMS` at the top of the export folder, one line per file in
`sha256sum`'s format (`<hex digest>  <path relative to the folder>`), so `sha256sum -c SHA256SUMS`
checks a copy anywhere. A damaged or swapped weights file still loads and answers, with confident
wrong labels: `keras-vit predict` (and the deployment kit's predictors, which repeat these few
lines without keras_vit) look for the record beside a model file or a few folders up, and refuse
a file whose digest differs from its line. A file that no record lists (an export older than the
record, a user's own `.tflite`) is taken as it is.
"""

import hashlib
import os

from keras_vit import files

RECORD = "SHA256SUMS"
# saved_model/<name>/<version>/variables/<file> lies four folders below the export's record.
LEVELS_UP = 4


class IntegrityError(ValueError):
    """A file differs from the digest its export recorded for it."""


def sha256(path):
    """The hex SHA-256 of a file, read in 1 MiB pieces (a B/16 file is hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for piece in iter(lambda: f.read(1 << 20), b""):
            digest.update(piece)
    return digest.hexdigest()


def digests(root, known=None):
    """`{relative path: hex SHA-256}` of every file below `root` but the record; `known` ones are reused."""
    known = known or {}
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            if relative != RECORD:
                found[relative] = known.get(relative) or sha256(path)
    return dict(sorted(found.items()))


def write_record(root, known=None):
    """Writes `root/SHA256SUMS` for every file below `root`; returns the digests."""
    found = digests(root, known)
    with files.atomic_write(os.path.join(root, RECORD)) as f:
        f.write("".join(f"{digest}  {relative}\n" for relative, digest in found.items()))
    return found


def read_record(path):
    """`{relative path: hex digest}` from a `SHA256SUMS` file (`sha256sum`'s text and binary lines)."""
    entries = {}
    with open(path) as f:
        for line in f:
            digest, _, name = line.rstrip("\n").partition(" ")
            if len(digest) == 64 and name[:1] in (" ", "*"):
                entries[name[1:]] = digest.lower()
    return entries


def verify(path):
    """Raises `IntegrityError` naming the file when a file at `path` (or below it) differs from its record.

    Returns the number of files checked (0: no record lists them).
    """
    path = os.path.abspath(os.fspath(path))
    paths = [os.path.join(d, n) for d, _, names in os.walk(path) for n in names] if os.path.isdir(path) else [path]
    records, checked = {}, 0
    for file in sorted(paths):
        found = _recorded(file, records)
        if found is None:
            continue
        record, expected = found
        if sha256(file) != expected:
            raise IntegrityError(
                f"{file} does not match the SHA-256 recorded for it in {record}: the file is damaged or was "
                "changed after the export; copy it again from the export (or export again)."
            )
        checked += 1
    return checked


def _recorded(file, records):
    """`(record path, digest)` of the nearest `SHA256SUMS` above `file` that lists it, or `None`."""
    folder = os.path.dirname(file)
    for _ in range(LEVELS_UP + 1):
        record = os.path.join(folder, RECORD)
        if record not in records:
            records[record] = read_record(record) if os.path.isfile(record) else {}
        digest = records[record].get(os.path.relpath(file, folder).replace(os.sep, "/"))
        if digest:
            return record, digest
        folder = os.path.dirname(folder)
    return None
