"""Atomic file writes (a kill mid-save never leaves a half-written file) and bounded reads (a FIFO, a device or a
huge file never hangs the program or fills its memory)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

__all__ = [
    "DiskFullError",
    "InputFileError",
    "MAX_YAML_VALUES",
    "OutputError",
    "YAMLSizeError",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_save",
    "check_output_file",
    "file_sha1",
    "read_bounded",
    "remove_stale_temporaries",
    "safe_load_bounded",
]

# errno -> what the user is told
FULL_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EFBIG: "file too large"}
if hasattr(errno, "EDQUOT"):
    FULL_ERRNOS[errno.EDQUOT] = "disk quota exceeded"
# The same failures as other writers word them: torch.save's zip writer ("unexpected pos", "file write failed")
# and safetensors' Rust I/O errors ("File too large", "StorageFull"), which carry no errno.
FULL_TEXTS = (
    ("No space left", "no space left on the device"),
    ("StorageFull", "no space left on the device"),
    ("File too large", "file too large"),
    ("FileTooLarge", "file too large"),
    ("Disk quota", "disk quota exceeded"),
    ("unexpected pos", "no space left on the device or file too large"),
    ("file write failed", "no space left on the device or file too large"),
)
# atomic_path's temporary names: "." + the file's name + mkstemp's 8 random characters + ".tmp" + the suffix
TEMPORARY = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp(\.[^.]*)?$")


class DiskFullError(UserError):
    """A write that failed for lack of space or over the file size limit; the file it replaces is intact."""

    def __init__(self, path: Path, reason: str, then: str = "run the command again") -> None:
        super().__init__(f"{reason} at {path}: free space (or raise the file size limit) and {then}")
        self.path, self.reason = path, reason


class OutputError(UserError):
    """An output path that cannot be written."""


class InputFileError(UserError):
    """A file to read that is not a regular file, or bigger than a file of its kind can be."""


def _full_disk(exc: BaseException) -> str | None:
    """What a failed write's exception says about space, or None if it is another failure."""
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return FULL_ERRNOS[exc.errno]
    if isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "SafetensorError":
        text = str(exc)
        return next((reason for needle, reason in FULL_TEXTS if needle in text), None)
    return None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` on success.

    A full disk or the file size limit (`ulimit -f`) ends in a DiskFullError naming `path`, whatever
    library was writing; `path` itself is untouched and the temporary file is removed.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except Exception as exc:
        reason = _full_disk(exc)
        if reason is None:
            raise
        raise DiskFullError(path, reason) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files that a killed process left in `directory` (atomic_path's names only); return them."""
    removed = []
    if directory.is_dir():
        for p in directory.iterdir():
            if TEMPORARY.match(p.name) and p.is_file() and not p.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    removed.append(p)
    return removed


def check_output_file(path: str | os.PathLike, flag: str = "--output") -> Path:
    """Refuse an output file path that cannot be written, before any work: a directory, or a folder that cannot be made
    or written."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a directory: pass a file name inside it, e.g. {path / 'metrics.json'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the nearest folder that exists: the rest is made on writing
    if not parent.is_dir():
        raise OutputError(f"cannot write {flag} {path}: {parent} is a file, not a folder: choose another {flag}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {flag} {path}: no permission to write in {parent}: choose another {flag}")
    return path


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(path: str | os.PathLike, write: Callable[[Path], object]) -> None:
    """Call `write(tmp_path)` and move the result to `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_save(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_save(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def read_bounded(
    path: str | os.PathLike,
    limit: int,
    kind: str,
    fix: str,
    name: str | None = None,
    error: type[UserError] = InputFileError,
) -> bytes:
    """The bytes of `path`, a regular file of at most `limit` bytes, or a one-line `error`.

    The one reader of files whose size the program does not choose (a --config file, a run's files). Opened without
    blocking and checked before reading, so a FIFO, a device (a link to /dev/zero) or a directory is refused at once
    instead of hanging or filling the memory; at most limit + 1 bytes are read, so a file that grows meanwhile is
    refused too. The messages name the file (`name`, default its path), say that it is bigger than `kind` ("a
    config file") can be, and end with `fix`.
    """
    name = str(path) if name is None else name
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(f"cannot read {name}: {exc.strerror}: {fix}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{name} is not a regular file (a directory, FIFO or device?): {fix}")
        if info.st_size > limit:
            raise error(f"{name} is {info.st_size:,} bytes, more than the {limit:,} bytes {kind} can be: {fix}")
        with os.fdopen(os.dup(fd), "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise error(f"cannot read {name}: {exc.strerror}: {fix}") from None
    finally:
        os.close(fd)
    if len(raw) > limit:  # it grew since fstat
        raise error(f"{name} is more than the {limit:,} bytes {kind} can be: {fix}")
    return raw


def file_sha1(path: str | os.PathLike) -> str:
    """The sha1 of a file's bytes (the digest BVLC published its weights with), read a megabyte at a time."""
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MAX_YAML_VALUES = 10_000  # values a YAML file of googlenet's may expand to (a config has about 70 settings)


class YAMLSizeError(yaml.YAMLError):
    """A YAML document that expands to more values than its kind of file can hold (an alias bomb, say)."""


class _CountingLoader(yaml.SafeLoader):
    """yaml.SafeLoader that counts the values a document expands to, an alias as every value it repeats, and stops
    past `max_values`. Aliases are kept as shared references while loading, but a few hundred bytes of nested aliases
    ("billion laughs") name billions of values, which anything that walks the result (str, yaml.dump, REPORT.md) makes.
    """

    max_values = MAX_YAML_VALUES
    aliases = True  # False: any alias is refused (googlenet writes none)

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.values, self.alias_seen = 0, False
        self.sizes: dict[int, int] = {}  # id(node) -> the values it expands to; the nodes live as long as the loader

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.alias_seen = True
            if not self.aliases:
                raise YAMLSizeError("uses YAML aliases (*name)")
            node = super().compose_node(parent, index)
            self._count(self.sizes.get(id(node), 1))  # an alias of a node still open (a cycle) counts once
            return node
        before = self.values
        node = super().compose_node(parent, index)
        self._count(1)
        self.sizes[id(node)] = self.values - before
        return node

    def _count(self, n: int) -> None:
        self.values += n
        if self.values > self.max_values:
            what = "uses YAML aliases that expand to" if self.alias_seen else "holds"
            raise YAMLSizeError(f"{what} more than {self.max_values:,} values")


def safe_load_bounded(text: str, max_values: int = MAX_YAML_VALUES, aliases: bool = True) -> Any:
    """yaml.safe_load of `text` expanding to at most `max_values` values (aliases counted as what they repeat), with
    no alias at all if not `aliases`; else a YAMLSizeError saying which ("uses YAML aliases ...")."""
    loader = type("Loader", (_CountingLoader,), {"max_values": max_values, "aliases": aliases})(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
