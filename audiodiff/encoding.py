"""Text is UTF-8 everywhere: every text file the package reads or writes (manifests, config YAML,
reports, metrics, caches, ``latest``) is UTF-8 whatever the locale, and a file name inside such
text is the UTF-8 spelling of the name's bytes.

Python's defaults follow the locale instead: ``open()`` / ``read_text()`` decode with the locale's
encoding, and a ``str`` file name stands for its bytes in the *filesystem* encoding (the locale's,
with surrogateescape). Under a UTF-8 locale the helpers below change nothing; under Latin-1 or the
C locale (ASCII) they keep a manifest naming the same files in every process that reads it.

A user-facing message is one line too (:func:`one_line`): the useful part of a library's multi-line
error (the unexpected key of a strict load, YAML's line and column) is kept, not cut.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

ENCODING = "utf-8"


def path_to_text(path: str | os.PathLike[str]) -> str:
    """How a file name is written into text: its bytes read as UTF-8.

    Bytes that are not UTF-8 become lone surrogates (which :func:`json_text` escapes), so
    :func:`path_from_text` gives the same name back.
    """
    return os.fsencode(path).decode(ENCODING, "surrogateescape")


def path_from_text(text: str) -> str:
    """The name, as this process spells file names, of a file named in UTF-8 text."""
    return os.fsdecode(text.encode(ENCODING, "surrogateescape"))


def native_path(path: str | os.PathLike[str]) -> str | bytes:
    """A file name for soundfile (libsndfile): the name's bytes on POSIX.

    soundfile encodes a ``str`` name strictly with the filesystem encoding, so a name that the
    locale cannot spell (any non-ASCII name under the C locale, or a name that is not UTF-8 under
    a UTF-8 locale) fails to open; the bytes always name the file. Windows names are Unicode.
    """
    return os.fspath(path) if os.name == "nt" else os.fsencode(path)


def json_text(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` keeping non-ASCII text readable, except where it holds lone surrogates (a
    file name that is not UTF-8): UTF-8 cannot carry those, so that text is escaped."""
    text = json.dumps(obj, ensure_ascii=False, **kwargs)
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        return json.dumps(obj, **kwargs)
    return text


def one_line(text: object, default: str = "error") -> str:
    """``text`` (an exception or string) on one line: its non-blank lines stripped and joined
    with ``"; "``; ``default`` when there is none (an exception's type name when given one)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if lines:
        return "; ".join(lines)
    return type(text).__name__ if isinstance(text, BaseException) else default


# libsndfile's open failure names the file as Python bytes ("Error opening b'/x.wav': ..."); the
# caller names it already, readably.
_SOUNDFILE_PREFIX = re.compile(r"^Error opening (b?'.*?'|b?\".*?\"): ")


def unreadable_reason(path: str | os.PathLike[str], err: BaseException) -> str:
    """Why a file could not be read, in words and on one line: ``"empty file (0 bytes)"`` for an
    empty one (whatever a reader calls it: libsndfile says "Format not recognised", NumPy "No
    data left in file", torch nothing), else the error's first line without libsndfile's
    ``Error opening b'...'`` prefix."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file (0 bytes)"
    except OSError:
        pass
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return _SOUNDFILE_PREFIX.sub("", text)
