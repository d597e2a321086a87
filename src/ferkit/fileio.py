"""Writing files so that a crash or an error never leaves half a file behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ferkit.errors import FerkitError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which races with other threads


def check_out_dir(out: str | Path) -> Path:
    """``out`` as a folder that can be created; checked before any work starts."""
    out = Path(out).expanduser()
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise FerkitError(f"--out {out}: {p} is a file, not a folder; give a folder for the results")
            break
    return out


def temp_beside(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """An open temporary file (descriptor, path) in ``path``'s folder, created if missing, with the permissions a
    plain ``open(path, "w")`` would give (mkstemp's own are owner-only)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.fchmod(fd, 0o666 & ~UMASK)
    return fd, Path(tmp)


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place."""
    path = Path(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def staging_dir(parent: Path, prefix: str) -> Path:
    """A new hidden folder ``<prefix><pid>-*`` in ``parent`` for files to publish together later. Staging folders
    of this prefix whose process is gone (killed runs) are removed first."""
    for old in parent.glob(f"{prefix}*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if old.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(dir=parent, prefix=f"{prefix}{os.getpid()}-"))
