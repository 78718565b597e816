"""Files written so that a kill at any moment leaves either the old file or the new one whole.

A file is written under a temporary name beside its final one (same folder, same suffix, so
Keras accepts `.keras` and `.weights.h5` names), flushed to the disk (fsync), then renamed over
the final name (`os.replace`, atomic on POSIX file systems) and the folder's entry synced. A
kill before the rename leaves the temporary file, which the next write of that name replaces.
"""

import contextlib
import json
import os

# Suffixes kept whole on the temporary name; others keep what os.path.splitext gives.
COMPOUND_SUFFIXES = (".weights.h5",)


def temporary_path(path):
    """Where `path` is written before it is renamed: `.NAME.partial SUFFIX` beside it."""
    directory, name = os.path.split(path)
    suffix = next((s for s in COMPOUND_SUFFIXES if name.endswith(s)), os.path.splitext(name)[1])
    return os.path.join(directory, f".{name[:len(name) - len(suffix)]}.partial{suffix}")


@contextlib.contextmanager
def written_atomically(path):
    """Context manager: yields the temporary path to write `path`'s new contents to; on a
    normal exit `commit`s it (an exception removes it and leaves `path` as it was)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise
    commit(temporary, path)


def commit(temporary, path):
    """fsync `temporary`, rename it to `path`, fsync the folder."""
    with open(temporary, "rb") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)
    sync_directory(os.path.dirname(os.path.abspath(path)))


def remove(path):
    """Delete `path` (if there) and fsync its folder, so the deletion survives a crash."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)
        sync_directory(os.path.dirname(os.path.abspath(path)))


def sync_directory(directory):
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json(value, path):
    """`json.dump(value)` to `path`, indented, atomically."""
    with written_atomically(path) as temporary, open(temporary, "w") as f:
        json.dump(value, f, indent=2)
