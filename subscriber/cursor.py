"""Stream ids as a resume point, in memory and in a file.

An id is ``<milliseconds>-<sequence>``; ids compare as integer pairs (as
text, ``9-0`` would sort after ``10-0``). The rules are the server's
(``wire.core.ids.parse_id``, checked against this copy by the tests): ASCII
digits only, a bare ``<milliseconds>`` means ``<milliseconds>-0`` (so
``since="0"`` is the start of the stream), each part at most 2**64 - 1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

StreamKey = tuple[int, int]

# ASCII digits: ``\d`` would accept Arabic-Indic digits, which int() reads,
# so ``١٢٣-٠`` would alias ``123-0`` here while the server refuses it.
_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_MAX = 2**64 - 1


def stream_key(item_id: str) -> StreamKey:
    """``"1717236000000-3"`` as ``(1717236000000, 3)``; ValueError if it is not an id."""
    m = _ID.fullmatch(item_id) if isinstance(item_id, str) else None
    key = (int(m.group(1)), int(m.group(2) or 0)) if m is not None else None
    if key is None or key[0] > _MAX or key[1] > _MAX:
        raise ValueError(f"not a stream id like 1717236000000-0: {str(item_id)[:40]!r}")
    return key


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
