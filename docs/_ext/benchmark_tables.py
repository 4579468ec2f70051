"""``.. benchmark-table:: PATH``: show a Markdown results file of ``benchmarks/`` in the docs.

The benchmark harness writes its summaries as Markdown: ``#`` headings, pipe tables,
``- `` bullets, ``![alt](plot.png)`` images and paragraphs. This directive renders that
subset without a Markdown parser: each pipe table becomes a docutils table, each heading
a rubric, bullets a list, images images (paths relative to the Markdown file) and other
lines paragraphs; inside them, code spans, bold and italics are kept and everything else is plain
text. ``PATH`` is relative to the repository root.

A missing file does not fail the build (the docs are built before the benchmarks in
``make check``, and a fresh clone may have no results): the page shows a note that says
which file is missing and how to produce it, and the build log says so too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive
from sphinx.util import logging

logger = logging.getLogger(__name__)

_INLINE = re.compile(
    r"`(?P<code>[^`]+)`|\*\*(?P<bold>[^*]+)\*\*|(?<![\w*])\*(?P<em>[^*\s][^*]*)\*(?![\w*])"
)
_IMAGE = re.compile(r"^!\[([^\]]*)\]\(([^)\s]+)\)$")
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


class BenchmarkTable(Directive):
    required_arguments = 1
    has_content = False

    @staticmethod
    def _inline(text: str) -> list[nodes.Node]:
        # Only code spans and bold are interpreted; everything else stays literal text,
        # so no character in a result file can break the build.
        parts: list[nodes.Node] = []
        position = 0
        for match in _INLINE.finditer(text):
            parts.append(nodes.Text(text[position : match.start()]))
            if match.group("code") is not None:
                parts.append(nodes.literal(text=match.group("code")))
            elif match.group("bold") is not None:
                parts.append(nodes.strong(text=match.group("bold")))
            else:
                parts.append(nodes.emphasis(text=match.group("em")))
            position = match.end()
        parts.append(nodes.Text(text[position:]))
        return parts

    def _table(self, rows: list[list[str]]) -> nodes.table:
        header, body = rows[0], rows[1:]
        width = len(header)
        table = nodes.table(classes=["benchmark-table"])
        group = nodes.tgroup(cols=width)
        table += group
        group.extend(nodes.colspec(colwidth=1) for _ in range(width))
        for section, section_rows in ((nodes.thead(), [header]), (nodes.tbody(), body)):
            for cells in section_rows:
                row = nodes.row()
                for cell in (cells + [""] * width)[:width]:
                    row += nodes.entry("", nodes.paragraph("", "", *self._inline(cell)))
                section += row
            group += section
        return table

    def run(self) -> list[nodes.Node]:
        env = self.state.document.settings.env
        root = Path(env.srcdir).parent
        path = root / self.arguments[0]
        if not path.is_file():
            logger.info("benchmark-table: %s not found; the page shows a note instead", path)
            note = nodes.note()
            note += nodes.paragraph(
                "",
                "",
                nodes.Text("No benchmark results at "),
                nodes.literal(text=self.arguments[0]),
                nodes.Text(" when these docs were built: run "),
                nodes.literal(text="make bench"),
                nodes.Text(" and rebuild them."),
            )
            return [note]
        env.note_dependency(str(path))
        docdir = (Path(env.srcdir) / env.docname).parent
        result: list[nodes.Node] = []
        table_rows: list[list[str]] = []
        bullets: nodes.bullet_list | None = None
        for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
            stripped = line.strip()
            if table_rows and not stripped.startswith("|"):
                result.append(self._table(table_rows))
                table_rows = []
            if bullets is not None and not stripped.startswith("- "):
                result.append(bullets)
                bullets = None
            if not stripped:
                continue
            if stripped.startswith("|"):
                if not _RULE.match(stripped):
                    table_rows.append(_cells(stripped))
            elif stripped.startswith("- "):
                bullets = bullets if bullets is not None else nodes.bullet_list()
                item = nodes.list_item()
                item += nodes.paragraph("", "", *self._inline(stripped[2:]))
                bullets += item
            elif stripped.startswith("#"):
                result.append(nodes.rubric("", "", *self._inline(stripped.lstrip("#").strip())))
            elif match := _IMAGE.match(stripped):
                image = (path.parent / match.group(2)).resolve()
                uri = os.path.relpath(image, docdir)
                result.append(nodes.image(uri=uri, alt=match.group(1) or image.stem))
            else:
                result.append(nodes.paragraph("", "", *self._inline(stripped)))
        return result


def setup(app):
    app.add_directive("benchmark-table", BenchmarkTable)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
