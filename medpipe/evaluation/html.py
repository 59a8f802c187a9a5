"""One self-contained HTML page from Markdown sections and PNG pictures: the CSS inline,
every image a ``data:`` URI, no script, no font or style sheet from elsewhere, so the file
opens from disk in any browser with no server and no network.

Markdown is rendered with markdown-it (CommonMark and tables, raw HTML escaped), so the
page shows the same text as ``metrics/report.md``.
"""

from __future__ import annotations

import base64
import html
import re
import struct
from dataclasses import dataclass, field

from markdown_it import MarkdownIt

_MD = MarkdownIt("commonmark", {"html": False}).enable("table")

CSS = """
:root { --ink: #1d2330; --muted: #5b6475; --line: #d9dee7; --accent: #1f5fa8;
        --warn: #8a4b00; --bg-soft: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
       font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; }
main { max-width: 1040px; margin: 0 auto; padding: 24px 28px 64px; }
h1 { font-size: 1.7rem; margin: 0 0 .4rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
p, li { max-width: 80ch; }
code { font: 0.9em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       background: var(--bg-soft); padding: 0 .25em; border-radius: 3px; }
table { border-collapse: collapse; margin: .6rem 0 1rem; font-size: .92rem;
        font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: left;
         vertical-align: top; }
th { background: var(--bg-soft); }
tr:nth-child(even) td { background: #fbfcfd; }
nav { background: var(--bg-soft); border: 1px solid var(--line); border-radius: 6px;
      padding: .6rem 1rem; margin: 1rem 0; }
nav ol { margin: 0; padding-left: 1.2rem; columns: 2; }
nav a { color: var(--accent); text-decoration: none; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; margin: .8rem 0 1.2rem; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px;
         background: #fff; max-width: 100%; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .85rem; margin-top: .3rem; max-width: 60ch; }
.gallery figure { flex: 0 1 320px; }
#model-card { background: #fffdf5; border: 1px solid #eadfb8; border-radius: 6px;
              padding: 0 1rem .6rem; }
#model-card h2 { border-bottom-color: #eadfb8; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem;
         border-top: 1px solid var(--line); padding-top: .6rem; }
@media print { nav { display: none; } figure { break-inside: avoid; } }
"""


@dataclass(frozen=True)
class Picture:
    """A PNG to show: ``name`` its file name stem, ``title`` its caption."""

    name: str
    title: str
    png: bytes


@dataclass
class Section:
    """A part of the page: a heading, a Markdown body, then pictures (``gallery``: many
    small ones side by side)."""

    heading: str
    markdown: str = ""
    pictures: list[Picture] = field(default_factory=list)
    gallery: bool = False


def split_markdown(text: str) -> tuple[str, str, list[Section]]:
    """A Markdown page as its title (the ``#`` line), the text before the first ``##``
    heading, and one section per ``##`` heading."""
    title, parts = "", [("", [])]
    for line in text.splitlines():
        if line.startswith("# ") and not title:
            title = line[2:].strip()
        elif line.startswith("## "):
            parts.append((line[3:].strip(), []))
        else:
            parts[-1][1].append(line)
    body = ["\n".join(lines).strip() + "\n" for _, lines in parts]
    return title, body[0], [Section(h, b) for (h, _), b in zip(parts[1:], body[1:],
                                                                strict=True)]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    return struct.unpack(">II", png[16:24])


def _img(picture: Picture) -> str:
    w, h = png_size(picture.png)
    data = base64.b64encode(picture.png).decode("ascii")
    caption = html.escape(picture.title)
    return (f'<figure id="fig-{slug(picture.name)}"><img src="data:image/png;base64,{data}" '
            f'width="{w}" height="{h}" alt="{caption}"><figcaption>{caption}</figcaption>'
            "</figure>")


def _section(section: Section) -> str:
    parts = [f'<section id="{slug(section.heading)}">',
             f"<h2>{html.escape(section.heading)}</h2>", _MD.render(section.markdown)]
    if section.pictures:
        cls = "figures gallery" if section.gallery else "figures"
        parts.append(f'<div class="{cls}">' + "".join(_img(p) for p in section.pictures)
                     + "</div>")
    parts.append("</section>")
    return "\n".join(parts)


def render(title: str, intro: str, sections: list[Section], footer: str = "") -> str:
    """The page: title, introduction (Markdown), a table of contents, the sections."""
    toc = "".join(f'<li><a href="#{slug(s.heading)}">{html.escape(s.heading)}</a></li>'
                  for s in sections)
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>",
        "<body>", "<main>", f"<header><h1>{html.escape(title)}</h1>", _MD.render(intro),
        "</header>", f"<nav><strong>Contents</strong><ol>{toc}</ol></nav>",
        *[_section(s) for s in sections],
        f"<footer>{_MD.render(footer)}</footer>" if footer else "",
        "</main>", "</body>", "</html>", ""])
