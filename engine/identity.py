"""Which input a result belongs to, where its results live, and who may write them.

- :func:`results_name` is the one name of an input's result folder, unique per input path:
  the slide's name plus a short hash of its absolute path (``a/s.tiff`` and ``b/s.tiff`` never
  share a folder; links are not followed, so two links to one file are two inputs).
- :func:`input_identity` fingerprints the content (size, mtime and a hash of the first and last
  MiB of every file; a DICOM slide is the folder of its ``.dcm`` files; the name, size and mtime
  of a MIRAX or Hamamatsu slide's companion files), so a result is reused only for the very
  content it was made from.
- :class:`ResultLock` is an ``O_EXCL`` lock file per result folder holding the writer's pid and
  host: two processes (two batches, the app and the CLI, or cluster workers on several machines
  sharing the folder) never write the same folder at once. A lock whose process on this machine is
  gone is stale and taken over; a lock from another machine, whose process cannot be checked, is a
  lease that its holder renews every :data:`LOCK_REFRESH_S` and that goes stale after
  :data:`LOCK_LEASE_S` without renewal (its machine or process died), timed by the clock of the
  file system that holds it, so machines whose clocks disagree still agree on it. Inside one
  process (the app triaging a folder while it analyses one slide) the locks it holds are known, so
  a second writer of the same folder is refused there too. Each lock carries a token: releasing
  removes only one's own lock file, and a stale one is taken over only if it is still the one
  judged stale.
"""

from __future__ import annotations

import configparser
import contextlib
import hashlib
import logging
import os
import platform
import re
import sys
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

from engine.errors import OutputError, Remedy, ResultLockedError, SlideNotFoundError
from engine.slide import slide_name
from engine.summary import InputIdentity

log = logging.getLogger(__name__)

FINGERPRINT_CHUNK = 1 << 20  # bytes hashed at each end of a file
LOCK = ".lock"
LOCK_WRITE_GRACE_S = 10.0  # an empty lock file younger than this is still being written
LOCK_LEASE_S = 60.0  # a lock from another machine not renewed for this long is stale
LOCK_REFRESH_S = LOCK_LEASE_S / 4  # how often a held lock is renewed (its mtime touched)
DICOM_SUFFIX = ".dcm"
NAME_CHARS = 80  # of a slide's name kept in its result folder's name
NAME_BYTES = 200  # and at most this many bytes of it in UTF-8
PATH_HEX = 16  # hex digits of the sha256 of the input's absolute path after the name
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]')


def _absolute(path: Path) -> Path:
    """The absolute path as given, links not followed: two links to one file are two inputs."""
    return Path(os.path.abspath(path))


def input_root(path: Path) -> Path:
    """What an input is: the file itself, or for a ``.dcm`` file the folder of its slide."""
    return path.parent if path.suffix.lower() == DICOM_SUFFIX and not path.is_dir() else path


def display_name(path: Path) -> str:
    """The human name of an input: the file name without extension, or the DICOM folder's name."""
    root = input_root(path)
    return _absolute(root).name if root is not path else slide_name(path)


def results_name(path: Path) -> str:
    """The result folder name of ``path``: ``<name>_<16 hex of the absolute path's sha256>``, the
    name cut to :data:`NAME_CHARS` characters and :data:`NAME_BYTES` bytes (file systems allow
    255 bytes, and one character can take four). 64 bits: among a million slides of one name, two
    share a folder with odds of about 3 in 100 million (8 hex digits gave 1% at ten thousand)."""
    root = input_root(path)
    key = str(_absolute(root)).encode("utf-8", "surrogateescape")
    safe = (_UNSAFE.sub("_", display_name(path)).strip(". ") or "slide")[:NAME_CHARS]
    while len(safe.encode("utf-8", "surrogateescape")) > NAME_BYTES:
        safe = safe[:-1]
    return f"{safe}_{hashlib.sha256(key).hexdigest()[:PATH_HEX]}"


def _files_of(path: Path) -> list[Path]:
    root = input_root(path)
    if root is path:
        return [path]
    return sorted(p for p in root.iterdir() if p.suffix.lower() == DICOM_SUFFIX and p.is_file())


def companions(path: Path) -> list[Path]:
    """The files a multi-file slide keeps beside ``path``: a MIRAX ``.mrxs``'s folder of the same
    name (``Slidedat.ini``, ``Data*.dat``), or the image files a Hamamatsu ``.vms``/``.vmu``
    names (``...File`` keys). Those that exist, sorted; none for other formats."""
    suffix = path.suffix.lower()
    if suffix == ".mrxs":
        folder = path.with_suffix("")
        return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    if suffix not in (".vms", ".vmu"):
        return []
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(path.read_text(encoding="utf-8", errors="replace"))
    except configparser.Error:  # not an index file at all: the slide reader will say so
        return []
    names = {v.strip() for section in parser.values() for k, v in section.items() if k.endswith("file")}
    return sorted(f for f in (path.parent / n for n in names if n) if f != path and f.is_file())


def _hash_stat(digest: hashlib._Hash, path: Path) -> os.stat_result:
    """Add ``path``'s name, size and mtime to ``digest``; its stat."""
    st = path.stat()
    digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode("utf-8", "surrogateescape"))
    return st


def _hash_file(digest: hashlib._Hash, path: Path) -> None:
    st = _hash_stat(digest, path)
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
        for file in companions(path):  # large and many: their names, sizes and times stand for them
            _hash_stat(digest, file)
    except OSError as exc:
        raise SlideNotFoundError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    return InputIdentity(
        path=str(_absolute(root)),
        kind="file" if root is path else "dicom",
        fingerprint=digest.hexdigest(),
    )


def made_from(recorded: InputIdentity | None, path: Path) -> bool:
    """Whether a result recording input ``recorded`` was made from the content now at ``path``
    (a result from before inputs were recorded cannot say, and is taken as made from it)."""
    return recorded is None or recorded == input_identity(path)


def file_system_now(folder: Path) -> float:
    """The time as the file system holding ``folder`` stamps a file written now (a file server's
    clock, for a shared folder); this machine's clock if nothing can be written there."""
    probe = folder / f".clock.tmp-{uuid.uuid4().hex}"  # the name stale temp files are cleared by
    try:
        probe.touch()
        try:
            return probe.stat().st_mtime
        finally:
            probe.unlink(missing_ok=True)
    except OSError:
        return time.time()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill(pid, 0) there sends a Ctrl-C event (CTRL_C_EVENT is 0)
        return _alive_on_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    def _alive_on_windows(pid: int) -> bool:
        """Whether process ``pid`` exists and has not exited (OpenProcess, GetExitCodeProcess)."""
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.GetExitCodeProcess.argtypes = (wintypes.HANDLE, ctypes.POINTER(wintypes.DWORD))
        kernel32.CloseHandle.argtypes = (wintypes.HANDLE,)
        query_limited_information, access_denied, still_active = 0x1000, 5, 259
        handle = kernel32.OpenProcess(query_limited_information, False, pid)
        if not handle:  # no such process, unless it is another user's
            return ctypes.get_last_error() == access_denied
        try:
            code = wintypes.DWORD()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True
            return code.value == still_active
        finally:
            kernel32.CloseHandle(handle)


def process_life(pid: int) -> str | None:
    """What tells one life of process ``pid`` from another: this boot's id and the process's start
    time (Linux ``/proc``), or None where that cannot be read. A pid that a crashed writer left in
    a lock and that now belongs to another process, after a restart or a reboot, has another."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        start = stat[stat.rindex(")") + 2 :].split()[19]  # field 22, starttime; fields 1-2: pid, (comm)
    except (OSError, ValueError, IndexError):
        return None
    return f"{boot}/{start}"


def this_host() -> str:
    """This machine's name, as written in lock files (no network look-up)."""
    return platform.node() or "localhost"


_HELD_HERE: dict[str, str] = {}  # lock file -> token of the lock this process holds (or is taking)
_HELD_GUARD = threading.Lock()


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def _read(path: Path) -> str | None:
    """A lock file's text; None if there is none, "" if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return None
    except OSError:
        return ""


def _parse(text: str) -> tuple[int, str | None, str | None, str | None]:
    """(pid, host, token, life) of a lock file's text: pid 0 if it is half-written or unreadable;
    no host, token or :func:`process_life` if an older version (or another system) wrote none."""
    parts = text.split()
    try:
        pid = int(parts[0]) if parts else 0
    except ValueError:
        return 0, None, None, None
    rest = [*parts[1:4], None, None, None]
    return pid, rest[0], rest[1], rest[2]


class ResultLock:
    """Exclusive right to write one result folder, for as long as the ``with`` block lasts."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / LOCK
        self._held = False
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._made_folder = False  # by acquire: a failed analysis leaves no empty folder behind

    def acquire(self) -> None:
        self._make_folder()
        with _HELD_GUARD:  # within this process the answer is known without the file
            if _key(self.path) in _HELD_HERE:
                raise ResultLockedError(f"{self.folder.name}: being analysed by this program")
            _HELD_HERE[_key(self.path)] = self._token
        try:
            self._create()
        except BaseException:
            self._forget()
            if self._made_folder:
                with contextlib.suppress(OSError):
                    self.folder.rmdir()
            raise

    def _make_folder(self) -> None:
        try:  # the output folder itself must exist: if it was removed mid-run, say so
            self.folder.mkdir()
            self._made_folder = True
        except FileExistsError:
            pass
        except FileNotFoundError as exc:
            raise OutputError(f"cannot write {self.folder}: the output folder was removed") from exc
        except OSError as exc:
            raise OutputError(f"cannot create {self.folder} ({exc.strerror or exc})") from exc

    def _create(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                seen = _read(self.path)
                holder = self._holder_of(seen)
                if holder is not None:
                    raise ResultLockedError(f"{self.folder.name}: being analysed by {holder}") from None
                self._take_over(seen)
                continue
            except FileNotFoundError:  # another writer, failing, removed the folder it had made
                self._make_folder()
                continue
            except OSError as exc:
                raise OutputError(f"cannot write to {self.folder} ({exc.strerror or exc})") from exc
            try:
                life = process_life(os.getpid()) or ""
                line = f"{os.getpid()} {this_host()} {self._token} {life}".rstrip() + "\n"
                os.write(fd, line.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    self.path.unlink()
                raise OutputError(f"cannot write to {self.folder} ({exc.strerror or exc})") from exc
            os.close(fd)
            self._held = True
            self._stop.clear()
            self._renewer = threading.Thread(target=self._renew, name="result-lock", daemon=True)
            self._renewer.start()
            return
        raise ResultLockedError(f"{self.folder.name}: its lock file {LOCK} keeps coming back")

    def holder(self) -> str | None:
        """Who holds the lock now, in words, or None if it is free or stale."""
        return self._holder_of(_read(self.path))

    def _holder_of(self, text: str | None) -> str | None:
        """:meth:`holder` for the lock file's ``text`` (None: there is none)."""
        if text is None:
            return None
        pid, host, token, life = _parse(text)
        if pid == 0:  # half-written: its writer died between create and write, or is writing now
            return "another process" if self._age() < LOCK_WRITE_GRACE_S else None
        if host is not None and host != this_host():
            return f"a process on {host} (pid {pid})" if self._age() < LOCK_LEASE_S else None
        if pid == os.getpid():  # held only if another lock of this process holds it now
            with _HELD_GUARD:
                held = _HELD_HERE.get(_key(self.path))
            if held is not None and held != self._token and token == held:
                return "this program"
            return None  # left by an earlier process with the same pid
        if _alive(pid) and (life is None or process_life(pid) in (None, life)):
            return f"another process (pid {pid})"
        return None  # gone, or its pid now belongs to another process (a restart, a reboot)

    def _take_over(self, seen: str | None) -> None:
        """Remove the stale lock whose text was ``seen``, unless it changed meanwhile: it is first
        moved aside, so of two processes taking over the same stale lock only one removes it,
        and a fresh lock moved aside by mistake is put back."""
        aside = self.path.with_name(f"{LOCK}.stale-{self._token}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return  # someone else removed it first
        except OSError as exc:
            raise OutputError(f"cannot write to {self.folder} ({exc.strerror or exc})") from exc
        if _read(aside) != seen:  # a new lock was made between our look and the move: give it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        log.debug("took over stale lock %s", self.path)
        with contextlib.suppress(OSError):
            aside.unlink()

    def held_elsewhere(self) -> bool:
        """Whether another machine holds a live lease on this folder (it may be about to expire)."""
        text = _read(self.path)
        if text is None:
            return False
        return _parse(text)[1] not in (None, this_host()) and self._holder_of(text) is not None

    def _age(self) -> float:
        """Seconds since the lock was written or renewed, by the clock of the file system that
        holds it: a machine whose own clock runs ahead must not see a live lease as stale."""
        try:
            renewed = self.path.stat().st_mtime
        except OSError:
            return float("inf")
        return file_system_now(self.folder) - renewed

    def _renew(self) -> None:
        while not self._stop.wait(LOCK_REFRESH_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def check(self) -> None:
        """Raise ResultLockedError unless this lock is still ours: another process takes over a
        lease that was not renewed for :data:`LOCK_LEASE_S` (this one stalled, or its machine
        slept), and then writes the folder itself."""
        text = _read(self.path)
        if not self._held or text is None or _parse(text)[2] != self._token:
            raise ResultLockedError(
                f"{self.folder.name}: taken over by another process while this one analysed it"
            )

    def release(self) -> None:
        if self._held:
            self._held = False
            self._stop.set()
            if self._renewer is not None:
                self._renewer.join(timeout=1.0)
                self._renewer = None
            text = _read(self.path)
            if text is not None and _parse(text)[2] == self._token:  # never another writer's lock
                with contextlib.suppress(OSError):
                    self.path.unlink()
            if self._made_folder:
                with contextlib.suppress(OSError):  # fails unless empty: a result stays
                    self.folder.rmdir()
            self._forget()

    def _forget(self) -> None:
        with _HELD_GUARD:
            if _HELD_HERE.get(_key(self.path)) == self._token:
                del _HELD_HERE[_key(self.path)]

    def __enter__(self) -> ResultLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
