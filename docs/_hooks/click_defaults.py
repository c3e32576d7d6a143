"""MkDocs hook: show option defaults correctly in the mkdocs-click CLI reference.

Since click 8.3, an option without a default has ``Sentinel.UNSET`` as its ``default``, and
mkdocs-click 0.9 prints that object literally ("Sentinel.UNSET") in the options table
(mkdocs/mkdocs-click pull request #95 fixes it upstream). This hook shows such options as
mkdocs-click did for click < 8.3: ``False`` for flags and "None" for other optional options.
It also renders the marker of required options, which mkdocs-click writes as a lone
``_required``, as an italic *required*.
"""

from __future__ import annotations

import copy
from typing import Any


def on_startup(**kwargs: Any) -> None:
    import mkdocs_click._docs as docs

    try:
        from click.core import UNSET  # click >= 8.3
    except ImportError:  # older click: no sentinel to hide
        UNSET = object()  # noqa: N806

    original = docs._format_table_option_row
    if getattr(original, "_medgan_patched", False):
        return

    def format_row(option):  # type: ignore[no-untyped-def]
        if option.default is UNSET:
            option = copy.copy(option)
            option.default = False if option.is_flag and not option.required else None
        return original(option).replace("| _required |", "| *required* |")

    format_row._medgan_patched = True  # type: ignore[attr-defined]
    docs._format_table_option_row = format_row
