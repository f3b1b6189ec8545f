"""Stream ids as a resume point, in memory and in a file.

An id is ``<milliseconds>-<sequence>``; ids compare as integer pairs (as
text, ``9-0`` would sort after ``10-0``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

StreamKey = tuple[int, int]

_ID = re.compile(r"(\d{1,20})-(\d{1,20})")


def stream_key(item_id: str) -> StreamKey:
    """``"1717236000000-3"`` as ``(1717236000000, 3)``; ValueError if it is not an id."""
    m = _ID.fullmatch(item_id.strip()) if isinstance(item_id, str) else None
    if m is None:
        raise ValueError(f"not a stream id like 1717236000000-0: {str(item_id)[:40]!r}")
    return int(m.group(1)), int(m.group(2))


class CursorFile:
    """A file holding the id of the last item the application finished with.

    Each save writes a temporary file next to it and renames it over the old
    one, so a crash at any moment leaves either the old id or the new one,
    never a torn file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def load(self) -> str | None:
        """The saved id, or None when the file does not exist or is empty."""
        try:
            text = self.path.read_text(encoding="ascii").strip()
        except FileNotFoundError:
            return None
        if not text:
            return None
        stream_key(text)  # a corrupt cursor must fail loudly, not restart from "now"
        return text

    def save(self, item_id: str) -> None:
        """Record ``item_id`` atomically."""
        self._tmp.write_text(item_id + "\n", encoding="ascii")
        os.replace(self._tmp, self.path)
