"""Write a file whole or not at all, with its mode set from its first byte."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomically(path: Path, data: bytes, *, mode: int) -> None:
    """Write through a temporary file created with ``mode``, fsync it, rename it into place.

    A secret is never readable by others, not even while it is written; a crash leaves
    the old file or the new one, never half of one.
    """
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # the umask may have taken bits away from the open's mode
    os.replace(tmp, path)
