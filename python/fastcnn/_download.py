"""Files written only when their SHA-256 matches: downloads over HTTP (gzipped, inflated on the fly with a limit on
the size) and copies of local IDX files, raw or gzipped. `fastcnn.datasets` re-exports `DownloadError`.
"""
from __future__ import annotations

import hashlib
import zlib
from pathlib import Path

from ._idx import _CHUNK, _MAX_IDX_BYTES
from ._atomic import atomic_file


class DownloadError(RuntimeError):
    """A server answered, but what it sent is not the expected file (wrong checksum, cut short, HTTP error)."""


# Raised to users through fastcnn.datasets, which re-exports it: tracebacks name it there, as before it moved here.
DownloadError.__module__ = "fastcnn.datasets"


# ------------------------------------------------------------------------------------------------- downloads


def _write_verified(chunks, destination: Path, expected_sha256: str, source: str) -> None:
    """Write the chunks to destination only if their SHA-256 matches; otherwise leave nothing behind.

    The bytes go to a hidden temporary file in the same directory and are renamed into place (os.replace is
    atomic on one file system), so neither a failed check nor an interrupted copy leaves a file that a later
    load would trust.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(destination, suffix=".part") as out:
        digest = hashlib.sha256()
        for chunk in chunks:
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != expected_sha256:
            raise DownloadError(
                f"SHA-256 mismatch for {destination.name} from {source}: expected {expected_sha256}, "
                f"got {digest.hexdigest()}; the file was not saved"
            )


def _inflate(chunks, source: str):
    """Decompress a gzip stream given in chunks, refusing more than _MAX_IDX_BYTES of output (a gzip bomb)."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect the gzip header and trailer
    produced = 0
    for chunk in chunks:
        while chunk:
            try:
                data = inflater.decompress(chunk, _CHUNK)
            except zlib.error as error:
                raise DownloadError(f"{source} is not a valid gzip file: {error}") from None
            produced += len(data)
            if produced > _MAX_IDX_BYTES + 16:
                raise DownloadError(f"{source} decompresses to more than {_MAX_IDX_BYTES} bytes; refusing it")
            yield data
            chunk = inflater.unconsumed_tail
    if not inflater.eof:
        raise DownloadError(f"{source} ended before the end of its gzip stream (the connection was cut short?)")


def _http_chunks(response, url: str):
    import http.client

    received = 0
    while True:
        try:
            chunk = response.read(_CHUNK)
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(f"{url}: the connection broke after {received} bytes: {error!r}") from None
        if not chunk:
            break
        received += len(chunk)
        yield chunk
    # http.client returns b"" rather than raising when a server closes before Content-Length bytes.
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.isdigit() and received < int(declared):
        raise DownloadError(f"{url}: the connection closed after {received} of {declared} bytes")


class _Unreachable(Exception):
    """No answer from the server at all (no network, DNS failure, refused, timed out)."""


def _download_file(url: str, destination: Path, expected_sha256: str, timeout: float) -> None:
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "fastcnn-datasets"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https URLs only)
    except urllib.error.HTTPError as error:
        error.close()
        raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
    except http.client.HTTPException as error:  # a malformed answer, as opposed to no answer
        raise DownloadError(f"{url}: {error!r}") from None
    except (urllib.error.URLError, OSError) as error:
        raise _Unreachable(f"{url}: {getattr(error, 'reason', error)}") from None
    with response:
        _write_verified(_inflate(_http_chunks(response, url), url), destination, expected_sha256, url)


# ----------------------------------------------------------------------------------------------- local files


def _file_chunks(file: Path):
    with open(file, "rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def _content_chunks(file: Path):
    """A local IDX file's uncompressed bytes, in chunks, whether it is stored raw or gzipped."""
    with open(file, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return _inflate(_file_chunks(file), str(file)) if gzipped else _file_chunks(file)


def _verified(file: Path, expected_sha256: str) -> bool:
    digest = hashlib.sha256()
    try:
        for chunk in _content_chunks(file):
            digest.update(chunk)
    except DownloadError:  # a corrupt .gz
        return False
    return digest.hexdigest() == expected_sha256
