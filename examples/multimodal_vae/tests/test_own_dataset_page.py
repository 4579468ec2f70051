"""``docs/own_dataset.rst`` runs as written: its code blocks, executed in order, print what
the page shows (what Sphinx's doctest builder checks in ``make docs``)."""

import contextlib
import io
import re
from pathlib import Path

OPTION = re.compile(r"^   :\w+:")
PAGE = Path(__file__).resolve().parents[3] / "docs" / "own_dataset.rst"
DIRECTIVE = re.compile(
    r"^\.\. (testsetup|testcode|testoutput|testcleanup)::\n((?:\n|   .*\n)+)", re.MULTILINE
)


def blocks() -> list[tuple[str, str]]:
    """``(directive, dedented content)`` of every doctest directive of the page, in order,
    without the directives' options (``:hide:``)."""
    return [
        (kind, "\n".join(line[3:] for line in body.splitlines() if not OPTION.match(line)))
        for kind, body in DIRECTIVE.findall(PAGE.read_text())
    ]


def test_the_page_runs_and_prints_what_it_shows(monkeypatch):
    monkeypatch.syspath_prepend(str(PAGE.parents[1] / "examples" / "multimodal_vae"))
    namespace: dict = {}
    printed = ""
    checked = 0
    for kind, code in blocks():
        if kind == "testoutput":
            expected = code.strip().splitlines()
            if expected != ["..."]:  # the ellipsis stands for any output
                assert printed.splitlines()[-len(expected) :] == expected
                checked += 1
            continue
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            exec(compile(code, f"{PAGE.name}:{kind}", "exec"), namespace)
        printed = buffer.getvalue()
    assert checked == 3
