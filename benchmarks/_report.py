"""The md + json tail the benchmark scripts share (they run as ``python benchmarks/NAME.py``, so this
folder is on ``sys.path`` and they import it as ``from _report import save_report``)."""
from __future__ import annotations

import json
from pathlib import Path


def save_report(out, markdown: str, payload) -> None:
    """Write OUT.md (markdown, newline-terminated) and OUT.json (payload, indent 1); create OUT's folder; print both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    md.write_text(markdown if markdown.endswith("\n") else markdown + "\n")
    js.write_text(json.dumps(payload, indent=1))
    print(f"wrote {md} and {js}")
