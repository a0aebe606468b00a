"""Atomic file writes: what a user saved is never lost or left half-written.

Everything fastcnn writes (models, checkpoints, figures, reports, benchmark results, downloaded datasets) goes to a
hidden temporary file in the destination's folder, is flushed to disk, and is renamed over the destination, which
is atomic on one file system. If anything fails (a full disk, Ctrl-C, a checksum that does not match), the
temporary file is removed and the previous file, if any, is left as it was.
"""
from __future__ import annotations

import contextlib
import os
import tempfile

__all__ = ["atomic_file", "write_text"]


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which is not thread-safe


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable; not every platform can open a directory, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path, mode: str = "wb", *, suffix: str = ".tmp", encoding: str | None = None):
    """Open a temporary file beside `path` for writing; when the block succeeds it replaces `path`.

    The file gets the permissions of the file it replaces, or those a plain open() would give (mkstemp's own are
    owner-only). Example:
        >>> with atomic_file("model.npz") as file:
        ...     file.write(data)
    """
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=suffix)
    try:
        with os.fdopen(descriptor, mode, encoding=encoding) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        permissions = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o666 & ~_UMASK
        os.chmod(temporary, permissions)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _fsync_directory(folder)


def write_text(path, text: str) -> str:
    """Write `text` as UTF-8 to `path` atomically; returns the path."""
    with atomic_file(path, "w", encoding="utf-8") as file:
        file.write(text)
    return os.fspath(path)
