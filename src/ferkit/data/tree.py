"""A read-only file tree that is either a folder or a .zip archive, so every reader works on both."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path, PurePosixPath

from ferkit.errors import DataError

JUNK_NAMES = {"Thumbs.db", "desktop.ini"}


def is_junk(rel: str) -> bool:
    """Operating-system litter (dotfiles, __MACOSX, Thumbs.db) that is never part of a dataset."""
    parts = PurePosixPath(rel).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1] in JUNK_NAMES


class Tree:
    """Files under a root, addressed by POSIX paths relative to that root."""

    location: str

    def files(self) -> list[str]:
        raise NotImplementedError

    def read(self, rel: str) -> bytes:
        raise NotImplementedError

    def fingerprint(self) -> str:
        raise NotImplementedError


class DirTree(Tree):
    def __init__(self, root: Path):
        self.root = root
        self.location = str(root)
        self._files: list[str] | None = None

    def files(self) -> list[str]:
        if self._files is None:
            out = []
            for dirpath, dirnames, filenames in os.walk(self.root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__MACOSX")
                base = Path(dirpath).relative_to(self.root).as_posix()
                for name in filenames:
                    rel = name if base == "." else f"{base}/{name}"
                    # Regular files only: a FIFO or device would block or never end when read.
                    if not is_junk(rel) and os.path.isfile(os.path.join(dirpath, name)):
                        out.append(rel)
            self._files = sorted(out)
            self._listed = set(self._files)
        return self._files

    def read(self, rel: str) -> bytes:
        """A file of the listing; any other name (``../../etc/passwd`` in a label file) is not in this tree."""
        self.files()
        if rel not in self._listed:
            raise FileNotFoundError(rel)
        return (self.root / rel).read_bytes()

    def fingerprint(self) -> str:
        # Hashing every file's bytes would cost as much as decoding them; names, sizes and mtimes change
        # whenever a file is added, removed or rewritten.
        h = hashlib.blake2b(digest_size=16)
        for rel in self.files():
            st = (self.root / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


class ZipTree(Tree):
    def __init__(self, path: Path):
        self.path = path
        self.location = str(path)
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{path}: not a readable .zip archive ({e}); download it again") from None
        self._files = sorted(i.filename for i in self.zf.infolist() if not i.is_dir() and not is_junk(i.filename))

    def files(self) -> list[str]:
        return self._files

    def read(self, rel: str) -> bytes:
        try:
            return self.zf.read(rel)
        except (zipfile.BadZipFile, OSError, RuntimeError) as e:
            raise DataError(f"{self.path}: cannot read {rel} ({e}); the archive is damaged, download it again")

    def fingerprint(self) -> str:
        return file_digest(self.path)


def file_digest(path: Path) -> str:
    """A content hash of one file (blake2b, 128 bits)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def open_tree(path: Path) -> Tree:
    if path.is_dir():
        return DirTree(path)
    if zipfile.is_zipfile(path):
        return ZipTree(path)
    raise DataError(f"{path}: not a folder or a .zip archive")


class SubTree(Tree):
    """The part of a tree below one of its folders."""

    def __init__(self, parent: Tree, prefix: str):
        self.parent = parent
        self.prefix = prefix.rstrip("/") + "/"
        self.location = f"{parent.location}/{prefix}"
        self._files = [f[len(self.prefix):] for f in parent.files() if f.startswith(self.prefix)]

    def files(self) -> list[str]:
        return self._files

    def read(self, rel: str) -> bytes:
        return self.parent.read(self.prefix + rel)

    def fingerprint(self) -> str:
        return hashlib.blake2b(f"{self.parent.fingerprint()}/{self.prefix}".encode(), digest_size=16).hexdigest()


def children(files: list[str]) -> tuple[set[str], set[str]]:
    """Top-level folder names and top-level file names of a list of relative paths."""
    dirs, plain = set(), set()
    for f in files:
        head, sep, _ = f.partition("/")
        (dirs if sep else plain).add(head)
    return dirs, plain
