"""Writing files so that a crash or an error never leaves half a file behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from ferkit.errors import FerkitError


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _read_umask()  # read once: os.umask can only be read by setting it, which races with other threads


def _check_writable(out: Path, flag: str, start: Path) -> None:
    """The nearest existing folder at or above ``start`` is a folder this process can create files in."""
    for parent in (start, *start.parents):
        if parent.exists():
            if not parent.is_dir():
                raise FerkitError(f"{flag} {out}: {parent} is a file, not a folder; give another place")
            try:
                tempfile.TemporaryFile(dir=parent).close()
            except OSError as e:
                raise FerkitError(f"{flag} {out}: cannot write in {parent} ({e.strerror or e}); give a place you "
                                  "can write to") from None
            return


def check_out_dir(out: str | Path, flag: str = "--out", files: Sequence[str] = ()) -> Path:
    """``out`` as a folder that can be created (or exists) and written in, with room for the result ``files`` (none
    of them a folder); checked before any work starts."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FerkitError(f"{flag} {out} is a file, not a folder; give a folder for the results")
    check_not_folders([out / f for f in files], flag)
    _check_writable(out, flag, out)
    return out


def check_not_folders(paths: Sequence[Path], flag: str = "--out") -> None:
    """Each of ``paths``, where a result file goes, is not a folder."""
    for path in paths:
        if path.is_dir():
            raise FerkitError(f"{path} is a folder where a result file goes; move it or give another {flag}")


def check_out_file(out: str | Path, suffixes: tuple[str, ...], what: str, flag: str = "--out") -> Path:
    """``out`` as a file ending in one of ``suffixes`` that can be written; checked before any work starts. ``what``
    names the file in the message when the suffix is wrong (e.g. "the plot is a PNG image")."""
    out = Path(out).expanduser()
    if out.suffix.lower() not in suffixes:
        raise FerkitError(f"{flag} {out}: {what}; give a file name ending in {suffixes[0]}")
    if out.is_dir():
        raise FerkitError(f"{flag} {out} is a folder; give a file name such as {out / ('out' + suffixes[0])}")
    _check_writable(out, flag, out.parent)
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
    stage = Path(tempfile.mkdtemp(dir=parent, prefix=f"{prefix}{os.getpid()}-"))
    stage.chmod(0o777 & ~UMASK)  # what a plain mkdir gives (mkdtemp's own is owner-only): it may be published as is
    return stage
