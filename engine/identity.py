"""Which input a result belongs to, where its results live, and who may write them.

- :func:`results_name` is the one name of an input's result folder, unique per input path:
  the slide's name plus a short hash of its absolute path (``a/s.tiff`` and ``b/s.tiff`` never
  share a folder; links are not followed, so two links to one file are two inputs).
- :func:`input_identity` fingerprints the content (size, mtime and a hash of the first and last
  MiB of every file; a DICOM slide is the folder of its ``.dcm`` files), so a result is reused
  only for the very content it was made from.
- :class:`ResultLock` is an ``O_EXCL`` lock file per result folder holding the writer's pid: two
  processes (two batches, or the app and the CLI) never write the same folder at once; a lock
  whose process is gone is stale and taken over.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import time
from pathlib import Path
from types import TracebackType

from engine.errors import OutputError, Remedy, SlideNotFoundError
from engine.summary import InputIdentity

log = logging.getLogger(__name__)

FINGERPRINT_CHUNK = 1 << 20  # bytes hashed at each end of a file
LOCK = ".lock"
LOCK_WRITE_GRACE_S = 10.0  # an empty lock file younger than this is still being written
DICOM_SUFFIX = ".dcm"
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def _absolute(path: Path) -> Path:
    """The absolute path as given, links not followed: two links to one file are two inputs."""
    return Path(os.path.abspath(path))


def _slide_stem(path: Path) -> str:
    return path.stem if path.suffix else path.name


def input_root(path: Path) -> Path:
    """What an input is: the file itself, or for a ``.dcm`` file the folder of its slide."""
    return path.parent if path.suffix.lower() == DICOM_SUFFIX and not path.is_dir() else path


def display_name(path: Path) -> str:
    """The human name of an input: the file name without extension, or the DICOM folder's name."""
    root = input_root(path)
    return _absolute(root).name if root is not path else _slide_stem(path)


def results_name(path: Path) -> str:
    """The result folder name of ``path``: ``<name>_<8 hex of the absolute path's sha256>``."""
    root = input_root(path)
    key = str(_absolute(root)).encode("utf-8", "surrogateescape")
    safe = _UNSAFE.sub("_", display_name(path)).strip(". ") or "slide"
    return f"{safe[:80]}_{hashlib.sha256(key).hexdigest()[:8]}"


def _files_of(path: Path) -> list[Path]:
    root = input_root(path)
    if root is path:
        return [path]
    return sorted(p for p in root.iterdir() if p.suffix.lower() == DICOM_SUFFIX and p.is_file())


def _hash_file(digest: hashlib._Hash, path: Path) -> None:
    st = path.stat()
    digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode("utf-8", "surrogateescape"))
    with path.open("rb") as fh:
        digest.update(fh.read(FINGERPRINT_CHUNK))
        if st.st_size > FINGERPRINT_CHUNK:
            fh.seek(max(FINGERPRINT_CHUNK, st.st_size - FINGERPRINT_CHUNK))
            digest.update(fh.read(FINGERPRINT_CHUNK))


def input_identity(path: Path) -> InputIdentity:
    """The identity of the input at ``path`` as it is now. Raises SlideNotFoundError."""
    if not path.exists():
        what = "a broken or looping link" if path.is_symlink() else "no such file"
        raise SlideNotFoundError(f"{path}: {what}")
    if path.is_dir():
        raise SlideNotFoundError(f"{path}: is a folder, not a slide file", Remedy.USE_SLIDE_FILE)
    root = input_root(path)
    digest = hashlib.sha256()
    try:
        for file in _files_of(path):
            _hash_file(digest, file)
    except OSError as exc:
        raise SlideNotFoundError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return InputIdentity(
        path=str(_absolute(root)),
        kind="file" if root is path else "dicom",
        fingerprint=digest.hexdigest(),
    )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ResultLockedError(OutputError):
    """Another running process is writing this result folder."""

    default_remedy = Remedy.WAIT_FOR_OTHER_RUN


class ResultLock:
    """Exclusive right to write one result folder, for as long as the ``with`` block lasts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK
        self._held = False

    def acquire(self) -> None:
        try:  # the output folder itself must exist: if it was removed mid-run, say so
            self.folder.mkdir(exist_ok=True)
        except FileNotFoundError as exc:
            raise OutputError(f"cannot write {self.folder}: the output folder was removed") from exc
        except OSError as exc:
            raise OutputError(f"cannot create {self.folder} ({exc.strerror or exc})") from exc
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner == 0 and self._young():
                    owner = -1  # being written right now by its creator
                if owner is not None and (owner == -1 or _alive(owner)) and owner != os.getpid():
                    who = "another process" if owner == -1 else f"another process (pid {owner})"
                    raise ResultLockedError(f"{self.folder.name}: being analysed by {who}") from None
                log.debug("removing stale lock %s (pid %s)", self.path, owner)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            except OSError as exc:
                raise OutputError(f"cannot write to {self.folder} ({exc.strerror or exc})") from exc
            try:
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.path.unlink()
                raise OutputError(f"cannot write to {self.folder} ({exc.strerror or exc})") from exc
            os.close(fd)
            self._held = True
            return
        raise ResultLockedError(f"{self.folder.name}: its lock file {LOCK} keeps coming back")

    def _owner(self) -> int | None:
        try:
            return int(self.path.read_text(encoding="ascii").strip() or "0")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return 0  # half-written: its writer died between create and write, or is writing now

    def _young(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime < LOCK_WRITE_GRACE_S
        except OSError:
            return False

    def release(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(OSError):
                self.path.unlink()

    def __enter__(self) -> ResultLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
