"""Opening ledger and anchor files safely: no symlinks, regular files only, owner read/write only.

    fd = open_private(path, os.O_RDWR | os.O_APPEND)    # created 0600 if missing

- The last path component is opened with ``O_NOFOLLOW``: a symbolic link planted at the ledger path
  (pointing at a file the attacker wants us to write into, or one they can read) is refused with
  :class:`~mcpclient_auth.errors.LedgerFileUnsafe` instead of being followed. Parent directories are
  not checked: put ledgers in a directory only their owner can write.
- A file that exists but is owned by another user is refused (that user controls its content and
  mode, and may read it); one we own whose mode lets group or others in (say 0644 from ``touch`` and
  a 022 umask, or 0666) is fixed to 0600, with a warning — refusing would only stop the agent over a
  mode its own user can change.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from ..errors import LedgerError, LedgerFileUnsafe

__all__ = ["open_private"]

_log = logging.getLogger("mcpclient_auth.ledger")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def open_private(path: Path, flags: int, *, what: str = "ledger") -> int:
    """An fd for ``path`` (created 0600 when missing), opened without following a final symlink."""
    shown = os.fspath(path)
    flags |= os.O_CLOEXEC | _NOFOLLOW
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            created = True
        except FileExistsError:
            fd = os.open(path, flags)
            created = False
    except OSError as exc:
        if path.is_symlink():
            raise LedgerFileUnsafe(f"{what} {shown!r} is a symbolic link; refusing to follow it") from None
        raise LedgerError(f"cannot open {what} {shown!r}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise LedgerFileUnsafe(f"{what} {shown!r} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if created:
            # The umask may have narrowed the mode; the file is exactly owner read/write.
            if mode != 0o600:
                os.fchmod(fd, 0o600)
        elif mode & 0o077:
            if info.st_uid != os.geteuid():
                raise LedgerFileUnsafe(
                    f"{what} {shown!r} is owned by another user and open to others (mode {mode:o}); "
                    "refusing to use it"
                )
            _log.warning("%s %r had mode %o; set to 600", what, shown, mode)
            os.fchmod(fd, 0o600)
        elif info.st_uid != os.geteuid():
            raise LedgerFileUnsafe(f"{what} {shown!r} is owned by another user; refusing to use it")
    except BaseException:
        os.close(fd)
        raise
    return fd
