"""Secret key files: written atomically with mode 0600, refused when others can read them.

A private key exists in exactly two places: in the memory of the process that uses it
and in one file only its owner can read.  Writing goes through a temporary file created
0600 from the first byte, linked (or renamed, with ``overwrite``) into place, then
fsynced with its directory, so a crash never leaves a partial or world-readable key.
Reading checks the mode on the opened descriptor (no check/use race) and refuses any
group/other access with :class:`~veil.errors.InsecureKeyFile`.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from veil.errors import ConfigError, InsecureKeyFile

MAX_KEY_FILE_BYTES = 64 * 1024


def write_secret_file(path: str | os.PathLike[str], data: bytes, *, overwrite: bool) -> None:
    """Write ``data`` to ``path`` with mode 0600; refuse to replace a file unless ``overwrite``."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise ConfigError(str(target), "key file", "already exists; refusing to overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), 0o600)  # the umask cannot widen it, but make it explicit
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # atomic: fails if the target appeared meanwhile
    except FileExistsError:
        raise ConfigError(
            str(target), "key file", "already exists; refusing to overwrite"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_secret_file(path: str | os.PathLike[str]) -> bytes:
    """Read a key file, refusing it if group or others have any access to it."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(name, "key file", exc.strerror or "cannot be opened") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(name, "key file", "is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise InsecureKeyFile(
                name,
                "permissions",
                f"mode {mode:04o} lets group/others access the private key; run chmod 600 {name}",
            )
        data = os.read(fd, MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise ConfigError(name, "key file", "is too large to be a key")
    return data
