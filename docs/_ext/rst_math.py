"""Griffe extension used by the API reference (mkdocs.yml, not the package).

The package's docstrings write formulas as reStructuredText ``.. math::`` directives, which
Markdown would show as a paragraph with its underscores taken for emphasis. This turns each
directive (its first line and the indented lines after it) into a ``$$ ... $$`` block, which
``pymdownx.arithmatex`` hands to MathJax.
"""

from __future__ import annotations

import re

from griffe import Extension

_DIRECTIVE = re.compile(r"^(?P<indent>[ ]*)\.\. math::[ ]*(?P<first>.*)$")


def rst_math_to_markdown(text: str) -> str:
    """``text`` with every ``.. math::`` directive as a ``$$`` display block."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        m = _DIRECTIVE.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent, body = m["indent"], [m["first"].strip()]
        i += 1
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(indent):
            body.append(lines[i].strip())
            i += 1
        out += [f"{indent}$$", *(f"{indent}{b}" for b in body if b), f"{indent}$$"]
    return "\n".join(out)


class RstMath(Extension):
    """Rewrite ``.. math::`` directives in every docstring griffe loads."""

    def on_instance(self, *, obj, **kwargs) -> None:
        doc = obj.docstring
        if doc is not None and ".. math::" in doc.value:
            doc.value = rst_math_to_markdown(doc.value)
