"""Checksummed, atomic downloads of canonical data files."""

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path

from dgmkit.errors import DataError

__all__ = ["download", "file_digest"]

log = logging.getLogger(__name__)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(url: str, dest: Path, checksum: str, algorithm: str = "sha256", timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``: streamed into a temporary file beside it, checked against
    ``checksum`` and only then renamed into place, so ``dest`` is never half-written."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    h = hashlib.new(algorithm)
    try:
        log.info("downloading %s", url)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            for block in iter(lambda: resp.read(1 << 20), b""):
                h.update(block)
                out.write(block)
        if h.hexdigest() != checksum:
            raise DataError(f"download of {url} has {algorithm} {h.hexdigest()}, expected {checksum}")
        os.replace(tmp, dest)
    except DataError:
        raise
    except OSError as e:  # URLError is an OSError
        raise DataError(f"could not download {url}: {getattr(e, 'reason', e)}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest
