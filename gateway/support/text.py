"""Plain text from untrusted sources: controls and bidi overrides out, line breaks plain.

Used by the composer (every value a template outputs) and by captions (what raqm lays out).
"""

from __future__ import annotations

import re

_LINE_BREAKS = re.compile("\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_CONTROLS = re.compile(
    "[\x00-\x08\x0e-\x1b\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ufff9-\ufffb]"
)
"""C0/C1 controls (not tab or newline), DEL, bidi marks, embeddings, overrides, isolates."""


def clean_text(text: str) -> str:
    """``text`` without controls or bidi overrides; every line break a plain ``\\n``.

    ``\\r\\n``, ``\\r``, vertical tab, form feed, U+001C..U+001E, NEL (U+0085) and
    U+2028/U+2029 become ``\\n``; NUL and other C0/C1 controls, DEL and the bidi
    marks, embeddings, overrides (U+202E) and isolates are removed.
    """
    return _CONTROLS.sub("", _LINE_BREAKS.sub("\n", text))
