"""The report's document model: a list of `Block`s (heading, paragraph, table, figure, code) rendered
twice, as Markdown (`render_markdown`, figures as PNG files beside it) and as one self-contained
HTML page (`render_html`, figures inlined as base64 data URIs, nothing fetched from anywhere).
`pipeline.report_sections` builds the blocks; `pipeline.report.write_report` writes both renderings.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass

from pipeline.card import md_cell


@dataclass
class Block:
    """One piece of the report: kind in {h1, h2, p, table, figure, code}."""

    kind: str
    text: str = ""
    rows: list[list[str]] | None = None  # table: header first
    png: bytes | None = None  # figure
    file: str = ""  # figure: its PNG file name beside the report


def render_markdown(blocks: list[Block]) -> str:
    """Markdown with figures referenced as PNG files beside report.md."""
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2"):
            out.append(("# " if b.kind == "h1" else "## ") + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "table":
            head, *body = b.rows
            lines = ["| " + " | ".join(map(md_cell, head)) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(map(md_cell, r)) + " |" for r in body]
            out.append("\n".join(lines))
        elif b.kind == "figure":
            out.append(f"![{b.text}]({b.file})")
        elif b.kind == "code":
            out.append("```\n" + b.text.rstrip() + "\n```")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}
pre{background:#f6f6f6;padding:1em;overflow-x:auto}.verdict{font-size:1.2em;font-weight:600}"""


def render_html(blocks: list[Block], title: str) -> str:
    """One HTML file: inline CSS, figures as data: URIs; nothing is fetched from anywhere."""
    e = html.escape
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(title)}</title><style>{_CSS}</style></head><body>"]
    for i, b in enumerate(blocks):
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "p":
            cls = " class='verdict'" if i == 1 else ""  # the verdict follows the title
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", e(b.text))
            out.append(f"<p{cls}>{text}</p>")
        elif b.kind == "table":
            head, *body = b.rows
            rows = ["<tr>" + "".join(f"<th>{e(str(c))}</th>" for c in head) + "</tr>"]
            rows += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in body]
            out.append("<table>" + "".join(rows) + "</table>")
        elif b.kind == "figure":
            data = base64.b64encode(b.png).decode("ascii")
            out.append(f"<figure><img alt='{e(b.text)}' src='data:image/png;base64,{data}'><figcaption>{e(b.text)}</figcaption></figure>")
        elif b.kind == "code":
            out.append(f"<pre>{e(b.text)}</pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
