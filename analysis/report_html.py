"""report.html: report.md rendered to one self-contained HTML file (images embedded as data URIs, no network),
laid out for a laptop and a phone alike. One source: the markdown report.py writes; nothing is said twice.

    report_html(Path("results/NAME/report.md").read_text(), Path("results/NAME"))  # -> the HTML text
"""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path

# Phones: images scale to the column; wide tables and code scroll inside their own box, never the page.
CSS = """
:root { color-scheme: light dark; }
* { box-sizing: border-box; }
body { font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; padding: 1rem;
       max-width: 60rem; overflow-wrap: anywhere; }
h1 { font-size: 1.6rem; line-height: 1.25; } h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 1px solid #8884; }
img { display: block; max-width: 100%; height: auto; margin: 0.75rem 0; }
.table-wrap { overflow-x: auto; margin: 0.75rem 0; }
table { border-collapse: collapse; font-size: 0.9rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #8886; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
pre { overflow-x: auto; padding: 0.75rem; background: #8881; border-radius: 4px; font-size: 0.85rem; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
p code, li code { overflow-wrap: anywhere; word-break: break-all; }
"""


def _data_uri(path: Path) -> str:
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def render_markdown(text: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def report_html(markdown: str, folder: Path, title: str | None = None) -> str:
    """The HTML page of `markdown`, whose relative image paths are files in `folder` (embedded here)."""
    body = render_markdown(markdown)

    def embed(m: re.Match) -> str:
        src = html.unescape(m.group(2))
        local = folder / src
        if "://" in src or src.startswith("data:") or not local.is_file():
            return m.group(0)
        return f'{m.group(1)}"{_data_uri(local)}"'

    body = re.sub(r'(<img src=)"([^"]*)"', embed, body)
    body = body.replace("<table>", '<div class="table-wrap"><table>').replace("</table>", "</table></div>")
    if title is None:
        first = re.search(r"<h1>(.*?)</h1>", body)
        title = re.sub(r"<[^>]+>", "", first.group(1)) if first else "report"
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n"
    )
