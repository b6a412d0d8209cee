"""Writing files so that a kill leaves either the old or the new content: shared by the trainer (configs,
checksums, metrics) and the results helpers (cached evaluations, results files)."""

from __future__ import annotations

import os
import pathlib


def write_atomic(path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, synced and then renamed over it:
    a kill at any moment leaves either the old file or the new one, never half of it."""
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
