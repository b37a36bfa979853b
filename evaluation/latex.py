"""LaTeX of the report bundle that compiles with pdflatex: text, the figures file, a draft document.

pdflatex reads UTF-8 but its default font encoding (OT1) has no Greek, no maths symbols and
prints ``<`` as an inverted exclamation mark, so :func:`escape` writes the report's symbols
(χ², α, ρ, ±, ×, ≥, §, –) as LaTeX commands, keeps accented Latin letters (which LaTeX's
UTF-8 support composes) and reduces anything else to its base letters or ``?``. Nothing it
writes needs the TS1 fonts, which pdflatex would make as bitmaps (Type 3 fonts) with METAFONT.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .figures import PaperFigure

_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    # Not \textasciitilde or \textasciicircum: they need the TS1 fonts, which pdflatex then
    # makes as bitmaps with METAFONT.
    "~": r"$\sim$",
    "^": r"\^{}",
    "<": r"$<$",
    ">": r"$>$",
    "|": r"$|$",
}
_UNICODE = {
    "χ": r"$\chi$",
    "α": r"$\alpha$",
    "β": r"$\beta$",
    "ρ": r"$\rho$",
    "τ": r"$\tau$",
    "ε": r"$\varepsilon$",
    "η": r"$\eta$",
    "σ": r"$\sigma$",
    "µ": r"$\mu$",
    "μ": r"$\mu$",
    "Δ": r"$\Delta$",
    "²": r"\textsuperscript{2}",
    "±": r"$\pm$",
    "×": r"$\times$",
    "÷": r"$\div$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "≈": r"$\approx$",
    "≠": r"$\neq$",
    "−": r"$-$",
    "→": r"$\rightarrow$",
    "°": r"$^\circ$",
    "–": "--",
    "—": "---",
    "…": r"\dots{}",
    "§": r"$\S$",  # \S in text mode takes the TS1 bitmap font
    "‘": "`",
    "’": "'",
    "“": "``",
    "”": "''",
    "′": "'",
    "\u00a0": "~",
    "\u202f": r"\,",
    "\u2009": r"\,",
}


#: Latin letters U+00C0..U+017F that pdflatex's default OT1 fonts cannot compose (eth, thorn,
#: ogonek and stroke letters, eng, long s ...): tried one by one with TeX Live 2022.
_NOT_OT1 = frozenset(
    chr(c)
    for c in (208, 215, 222, 240, 247, 254, 260, 261, 272, 273, 280, 281, 294, 295, 302, 303, 312, 319, 320, 329)
    + (330, 331, 358, 359, 370, 371, 383)
)


def _char(ch: str) -> str:
    if ch in _SPECIAL:
        return _SPECIAL[ch]
    if ch in _UNICODE:
        return _UNICODE[ch]
    if ord(ch) < 128 or ("\u00c0" <= ch <= "\u017f" and ch not in _NOT_OT1):
        return ch
    base = unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode("ascii")
    return "".join(_SPECIAL.get(b, b) for b in base) or "?"


def escape(text: object) -> str:
    """``text`` as LaTeX text that pdflatex compiles with its default fonts (see the module docstring)."""
    return "".join(_char(ch) for ch in str(text))


def figures_tex(figures: Sequence[PaperFigure]) -> str:
    """``figures.tex``: every figure's PDF at its print size with its caption and a ``fig:mushra-*`` label.

    A two-column figure uses ``figure*`` (the full text width in a two-column class).
    """
    lines = [
        "% Figures of the MUSHRA report. Requires \\usepackage{graphicx}; \\input from the bundle's folder",
        "% (or set \\graphicspath). Each PDF is at its journal width: 3.5 in (one column) or 7 in (two).",
    ]
    for f in figures:
        env = "figure" if f.width_in <= 3.5 + 1e-6 else "figure*"
        lines += [
            f"\\begin{{{env}}}[tbp]",
            "\\centering",
            f"\\includegraphics[width={f.width_in:g}in]{{{f.files()[1]}}}",
            f"\\caption{{{escape(f.caption)}}}",
            f"\\label{{fig:mushra-{f.stem}}}",
            f"\\end{{{env}}}",
            "",
        ]
    return "\n".join(lines)


def paper_tex() -> str:
    """``paper.tex``: a draft that inputs the methods paragraph, the tables and the figures.

    A 7.3 in text width on US letter holds the two-column figures and the widest table at print size.
    """
    return "\n".join(
        [
            "% A draft of the results: pdflatex paper.tex (in the bundle's folder).",
            "\\documentclass[10pt]{article}",
            "\\usepackage[utf8]{inputenc}",
            "\\usepackage[letterpaper,margin=0.6in]{geometry}",
            "\\usepackage{booktabs}",
            "\\usepackage{graphicx}",
            "\\begin{document}",
            "\\section*{Method and results}",
            "\\input{methods.tex}",
            "\\input{table.tex}",
            "\\input{figures.tex}",
            "\\end{document}",
            "",
        ]
    )
