"""Run directories are data: a directory qrecipe writes into or reads a result from (a run's
output, a received one handed to `resume` or `verify`) may have come from someone else, and a
symbolic link in it would make qrecipe write where the sender chose (truncate any file the user
may write, append a line to a `.pth` file that runs at the next interpreter start) or hash a file
outside it. So:

- `check_no_symlinks(DIR)`: DIR itself, or anything under it, a symbolic link (or a FIFO,
  device or socket, which block or never end when read) is refused with one line before qrecipe
  writes or hashes anything there. Links above DIR are the user's own layout and stay allowed.
- writes into DIR go through `open_nofollow` / `write_bytes_nofollow` (each directory on the way
  opened relative to the one before with O_NOFOLLOW, the file itself with O_NOFOLLOW, so a link
  swapped in after the check is not followed either) or `real_dir` (the directory a temp file is
  made in, checked component by component: record/atomic.py).
- `inside(DIR, rel)`: a path a received file names (a manifest entry) stays inside DIR: not
  absolute, no `..`, no link on the way, a regular file.
Nothing here imports anything but the standard library and qrecipe.errors.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Iterator, Tuple

from qrecipe.errors import QRecipeError

KEY = "hydra.run.dir"  # the config key naming a run's directory (commands pass their own: DIR)
MAX_ENTRIES = 1_000_000  # a run or sweep directory has hundreds of files; past this it is not one
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
HINT = "a run directory is data: remove the link (or the file), or choose another directory"


def _refuse(root: Path, path: str, why: str, key: str) -> QRecipeError:
    return QRecipeError(f"{path} {why}; qrecipe never writes or reads through it", key=key,
                        value=str(root), hint=HINT)


def check_no_symlinks(root: Path, key: str = KEY) -> None:
    """Refuse (one QRecipeError naming the path and `key`) a directory that is a symbolic link
    or holds one, or holds a FIFO, device or socket, anywhere below it. Absent: nothing to
    check. Each entry is lstat'ed; no link is followed."""
    root = Path(root)
    try:
        st = os.lstat(root)
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (a file in the way: the caller says what it needs)
    except OSError as e:
        raise _refuse(root, str(root), f"cannot be read ({e.strerror})", key) from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(root, str(root), "is a symbolic link", key)
    if not stat.S_ISDIR(st.st_mode):
        return  # a file in the way: the caller says what it needs (a directory)
    for path, why in _bad_entries(root):
        raise _refuse(root, path, why, key)


def _bad_entries(root: Path) -> Iterator[Tuple[str, str]]:
    """(path, why) of each entry below root that is not a plain file or directory."""
    todo, seen = [str(root)], 0
    while todo:
        d = todo.pop()
        try:
            entries = list(os.scandir(d))
        except OSError as e:
            yield d, f"cannot be read ({e.strerror})"
            return
        for e in entries:
            seen += 1
            if seen > MAX_ENTRIES:
                yield str(root), f"holds more than {MAX_ENTRIES} entries (not a run directory)"
                return
            if e.is_symlink():
                yield e.path, "is a symbolic link"
            elif e.is_dir(follow_symlinks=False):
                todo.append(e.path)
            elif not e.is_file(follow_symlinks=False):
                yield e.path, "is not a regular file (a FIFO, device or socket)"


def _parts(root: Path, path: Path) -> Tuple[str, ...]:
    """path's components below root; refused when path is not below root."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        raise QRecipeError(f"{path} is not inside the output directory", key=KEY,
                           value=str(root)) from None
    if any(p in ("", ".", "..") for p in rel.parts):
        raise QRecipeError(f"{path} is not inside the output directory", key=KEY,
                           value=str(root))
    return rel.parts


def _open_dir(root: Path, parts: Tuple[str, ...], create: bool, key: str) -> int:
    """A descriptor of root/parts..., each directory opened relative to the one before with
    O_NOFOLLOW (created when missing and `create`): no link on the way is followed."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as e:
        raise _refuse(root, str(root), _why(e), key) from None
    try:
        for i, name in enumerate(parts):
            if create:
                try:
                    os.mkdir(name, 0o755, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                raise _refuse(root, str(Path(root, *parts[:i + 1])), _why(e), key) from None
            os.close(fd)
            fd = nxt
    except BaseException:
        os.close(fd)
        raise
    return fd


def _why(e: OSError) -> str:
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        return "is a symbolic link or not a directory"
    return f"cannot be opened ({e.strerror})"


def real_dir(root: Path, path: Path, key: str = KEY) -> Path:
    """path (a directory at or below root), created where missing, every component below root
    a real directory (no link followed): where a temp file may be made and renamed."""
    os.close(_open_dir(Path(root), _parts(root, path), True, key))
    return Path(path)


def open_nofollow(root: Path, path: Path, flags: int, mode: int = 0o644,
                  key: str = KEY) -> int:
    """os.open(path, flags | O_NOFOLLOW | O_CLOEXEC) for a file below root, its directories
    opened one by one without following a link (created when missing and flags has O_CREAT)."""
    parts = _parts(root, path)
    if not parts:
        raise QRecipeError(f"{path} is the directory itself, not a file in it", key=key,
                           value=str(root))
    dfd = _open_dir(Path(root), parts[:-1], bool(flags & os.O_CREAT), key)
    try:
        return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dfd)
    except OSError as e:
        raise _refuse(Path(root), str(path), _why(e), key) from None
    finally:
        os.close(dfd)


def write_bytes_nofollow(root: Path, path: Path, data: bytes, key: str = KEY) -> None:
    """data as the whole new content of path (below root): written to a temp file in the same
    directory (created with O_EXCL, so never through a link) and renamed onto path (a link at
    path is replaced, not followed). A reader sees the old file or the new one."""
    parts = _parts(root, path)
    dfd = _open_dir(Path(root), parts[:-1], True, key)
    tmp = f".tmp-{parts[-1]}.{os.urandom(6).hex()}"  # the prefix record/atomic.py uses
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dfd)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, parts[-1], src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dfd)
        except OSError:
            pass
        raise
    finally:
        os.close(dfd)


def write_text_nofollow(root: Path, path: Path, text: str, key: str = KEY) -> None:
    write_bytes_nofollow(root, path, text.encode("utf-8"), key)


def inside(root: Path, rel: object, key: str = "DIR", what: str = "a path") -> Path:
    """root/rel for a relative path a received file names, if it stays inside root: a
    non-empty string, not absolute, no `..`, no symbolic link on the way, and (if it exists) a
    regular file. A missing file is returned (the caller reports it as missing)."""
    root = Path(root)

    def refuse(why: str) -> QRecipeError:
        return QRecipeError(f"{what} {rel!r} {why}", key=key, value=str(root),
                            hint="a run directory's files are named relative to it; nothing "
                                 "outside it is read")

    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise refuse("is not a file name")
    p = PurePosixPath(rel)
    if p.is_absolute():
        raise refuse("is absolute: it leaves the directory")
    if ".." in p.parts:
        raise refuse("has '..': it leaves the directory")
    cur = root
    for i, name in enumerate(p.parts):
        cur = cur / name
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return root / p
        except OSError as e:
            raise refuse(f"cannot be read ({e.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise refuse("goes through a symbolic link")
        if i < len(p.parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return root / p  # a file where a folder should be: missing
    if not stat.S_ISREG(st.st_mode):
        raise refuse("is not a regular file")
    return root / p
