"""Writing a fixed file atomically: a temporary file beside it, then a rename over it.

A reader sees either the old file or the new one, never half of it; the file keeps its mode bits
(and its owner where the process may set it), and a symbolic link keeps pointing where it did
(the file it points to is replaced).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile


def write_atomically(path: str, data: bytes) -> None:
    """Replace the contents of ``path`` with ``data``, keeping its permission bits.

    Raises:
        OSError: the directory is not writable (the original file is then unchanged).
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target) or "."
    status = os.stat(target)
    handle, temporary = tempfile.mkstemp(
        dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".gradguard-fix"
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, stat.S_IMODE(status.st_mode))
        if (status.st_uid, status.st_gid) != (os.getuid(), os.getgid()):
            # Fixing someone else's file (as root, say) keeps its owner where allowed.
            with contextlib.suppress(OSError):
                os.chown(temporary, status.st_uid, status.st_gid)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
