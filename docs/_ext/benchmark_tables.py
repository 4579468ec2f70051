"""``.. benchmark-table:: PATH``: show a Markdown results file of ``benchmarks/`` as tables.

The benchmark harness writes its summaries as Markdown (pipe tables, ``#`` headings and
paragraphs). This directive renders them in the docs without a Markdown parser: each pipe
table becomes a docutils table, each heading a rubric and other lines paragraphs, with
reStructuredText inline markup (Markdown's single backticks become literals). ``PATH`` is
relative to the repository root.

A missing file does not fail the build (the docs are built before the benchmarks in
``make check``, and a fresh clone may have no results): the page shows a note that says
which file is missing and how to produce it, and the build log says so too.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from sphinx.util import logging

logger = logging.getLogger(__name__)

_CODE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _rst_inline(text: str) -> str:
    return _CODE.sub(r"``\1``", text)


class BenchmarkTable(Directive):
    required_arguments = 1
    has_content = False
    option_spec = {"caption": directives.unchanged}

    def _inline(self, text: str) -> list[nodes.Node]:
        parsed, messages = self.state.inline_text(_rst_inline(text), self.lineno)
        return [*parsed, *messages]

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
        result: list[nodes.Node] = []
        table_rows: list[list[str]] = []
        for line in [*path.read_text(encoding="utf-8").splitlines(), ""]:
            stripped = line.strip()
            if stripped.startswith("|"):
                if not _RULE.match(stripped):
                    table_rows.append(_cells(stripped))
                continue
            if table_rows:
                result.append(self._table(table_rows))
                table_rows = []
            if not stripped:
                continue
            if stripped.startswith("#"):
                result.append(nodes.rubric("", "", *self._inline(stripped.lstrip("#").strip())))
            else:
                result.append(nodes.paragraph("", "", *self._inline(stripped)))
        return result


def setup(app):
    app.add_directive("benchmark-table", BenchmarkTable)
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
