"""Output paths of the commands (``simulate --json/--plot``, ``precode --json``,
``bench --json``, ``train --out``): checked before any work, written atomically.

* :func:`check_file` / :func:`check_dir` run when the command starts, before the first
  Monte-Carlo batch or training step: the parent folders are created, a folder given
  where a file is expected (or a file where a folder is), an unsupported plot suffix, or a
  folder that cannot be written is refused at once with :class:`OutputPathError` (a
  ``ValueError`` naming the option and the path), instead of a traceback after an
  hour's run.
* :func:`write_json` / :func:`write_text` / :func:`save_figure` write a temporary file in
  the same folder and ``os.replace`` it onto the final name, so the file under the final
  name is always either the previous complete one or the new complete one -- never half
  written, even if the process is killed mid-write.

JSON is written strictly (``allow_nan=False``): a NaN or infinity is an error here, not
the non-standard ``NaN``/``Infinity`` tokens other JSON readers reject.
"""
from __future__ import annotations

import json
import os
import pathlib
import tempfile
from typing import Callable, Optional, Sequence

#: suffixes ``--plot`` accepts (matplotlib's Agg backend writes each natively)
PLOT_SUFFIXES = (".png", ".pdf", ".svg")


class OutputPathError(ValueError):
    """An output path that cannot be written: it names the option and the path."""


def _writable_dir(d: pathlib.Path, option: str, path) -> None:
    if not os.access(d, os.W_OK | os.X_OK):
        raise OutputPathError(f"{option} {str(path)!r}: the folder {str(d)!r} is not writable")


def _make_parents(p: pathlib.Path, option: str) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(f"{option} {str(p)!r}: a parent of it is a file, not a folder") from None
    except OSError as e:
        raise OutputPathError(f"{option} {str(p)!r}: cannot create its folder ({e.strerror or e})") from None


def check_file(path, option: str, suffixes: Optional[Sequence[str]] = None) -> pathlib.Path:
    """Check an output *file* path before any work; create its parent folders.

    Refused (:class:`OutputPathError`): an existing folder, a path ending in a separator,
    a suffix not in ``suffixes`` (when given; case-insensitive), a parent that is a file
    or not writable. An existing file is accepted: it is replaced atomically when the
    result is written. Returns the path as a :class:`pathlib.Path`."""
    text = os.fspath(path)
    if not text:
        raise OutputPathError(f"{option}: the path is empty")
    p = pathlib.Path(text)
    if text.endswith(("/", os.sep)) or p.is_dir():
        raise OutputPathError(f"{option} {text!r} is a folder; give a file name (e.g. {text.rstrip('/' + os.sep)}"
                              f"/{'results' + (suffixes[0] if suffixes else '.json')})")
    if suffixes is not None and p.suffix.lower() not in suffixes:
        raise OutputPathError(f"{option} {text!r}: unsupported suffix {p.suffix or '(none)'!r}; use one of "
                              f"{', '.join(suffixes)}")
    if p.exists() and not p.is_file():
        raise OutputPathError(f"{option} {text!r} exists and is not a regular file")
    _make_parents(p, option)
    _writable_dir(p.parent, option, text)
    return p


def check_dir(path, option: str) -> pathlib.Path:
    """Check an output *folder* before any work and create it (with its parents).
    Refused: an existing file (or a parent that is one), a folder that is not writable."""
    text = os.fspath(path)
    if not text:
        raise OutputPathError(f"{option}: the path is empty")
    p = pathlib.Path(text)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{option} {text!r} is a file; it must be a folder (it is created if missing)")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise OutputPathError(f"{option} {text!r}: a parent of it is a file, not a folder") from None
    except OSError as e:
        raise OutputPathError(f"{option} {text!r}: cannot create the folder ({e.strerror or e})") from None
    _writable_dir(p, option, text)
    return p


def atomic_write(path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then
    ``os.replace(tmp, path)``. On any error (or interrupt) the temporary file is removed
    and ``path`` keeps its previous content. The temporary file has ``path``'s suffix (so
    writers that pick a format from it, e.g. matplotlib, write the right one)."""
    p = pathlib.Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp" + p.suffix, dir=p.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)    # mkstemp makes 0600: give the usual mode
        os.replace(tmp, p)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    atomic_write(path, write)


def write_json(path, obj, **kw) -> None:
    """``json.dump`` atomically and strictly (a NaN or infinity raises ``ValueError``)."""
    kw.setdefault("indent", 2)
    write_text(path, json.dumps(obj, allow_nan=False, **kw) + "\n")


def save_figure(fig, path, **kw) -> None:
    """``fig.savefig`` atomically; the format comes from ``path``'s suffix."""
    fmt = pathlib.Path(path).suffix.lstrip(".").lower() or None
    atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, **kw))


__all__ = ["OutputPathError", "PLOT_SUFFIXES", "check_file", "check_dir", "atomic_write", "write_text",
           "write_json", "save_figure"]
