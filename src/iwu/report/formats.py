"""The table as text: Markdown, LaTeX (booktabs) and CSV.

Names come from run files (experiments, modes, classes) and may hold anything: a line break in one is
written as its escape (``\\n``) in every format, so it never breaks a row, a header or a note.
"""

from __future__ import annotations

import csv
import io

from iwu.report.paper import PaperCell
from iwu.report.stats import (
    ALPHA, DDOF, LEVEL, MIOU, PAIRED, POPULATION, SAMPLE, STUDENT, TEST_NAMES, WELCH, Stat, is_missing, seed_list,
)
from iwu.report.table import Comparison, Table

RAW = "\u2020"  # marks a difference to the paper left in IoU units because the published std is 0
STD_LABELS = {SAMPLE: "sample (ddof=1)", POPULATION: "population (ddof=0)"}  # as the CSV's `std` column says
# as the CSV's `test` column says
TEST_LABELS = {WELCH: "Welch's t-test", STUDENT: "Student's t-test", PAIRED: "paired t-test"}
_TEST_NOTES = {WELCH: "unequal variances", STUDENT: "equal variances, pooled, df = n_a + n_b - 2",
               PAIRED: "on the per-seed differences, df = n - 1"}
_CI_NOTES = {WELCH: "Welch-Satterthwaite df", STUDENT: "pooled se, df = n_a + n_b - 2",
             PAIRED: "se of the differences, df = n - 1"}
EFFECT_HEADERS = {False: "g", True: "d_z"}  # the effect size's column: Hedges' g, or Cohen's d_z when paired
_CSV_EFFECT = {False: "hedges g", True: "cohen d_z"}
CI_HEADER = f"{100 * LEVEL:.0f}% CI"
BH_HEADER = "p (BH)"
SIG_HEADER = f"p (BH) < {ALPHA:g}"
_LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits at


def _one_line(text: str) -> str:
    """`text` with each line break written as its escape: ``a\\nb`` for a, a newline, b."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if ch in _LINE_BREAKS else ch for ch in text)


class _Cmp:
    """One row (class `i`, or mIoU for None) of a comparison."""

    def __init__(self, cmp: Comparison, i: int | None):
        miou = i is None
        self.diff = cmp.miou_diff if miou else cmp.diff[i]
        self.se = cmp.miou_se if miou else cmp.se[i]
        self.test = cmp.miou_test if miou else cmp.tests[i]
        self.p_adj = cmp.miou_p_adj if miou else cmp.p_adj[i]
        self.ci = cmp.miou_ci if miou else cmp.ci[i]
        self.g = cmp.miou_g if miou else cmp.g[i]
        self.mark = "*" if cmp.significant(i) else ""


def format_p(p, tex: bool = False) -> str:
    """A p-value as every table prints it: three decimals, or one significant digit and its exponent below
    0.001 (LaTeX's `\\times 10^{k}` with `tex`); `--` where there is none."""
    if is_missing(p):
        return "--"
    if p >= 0.001:
        return f"{p:.3f}"
    mantissa, exponent = f"{p:.1e}".split("e")
    return f"${mantissa} \\times 10^{{{int(exponent)}}}$" if tex else f"{p:.1e}"


class _Style:
    """Number formatting shared by the text formats."""

    def __init__(self, percent: bool, decimals: int | None):
        self.scale = 100.0 if percent else 1.0
        self.d = decimals if decimals is not None else (1 if percent else 3)
        self.paper_d = max(self.d - 1, 0) if percent else 2  # the paper prints two decimals of a fraction

    def num(self, x, d=None, sign=False) -> str:
        if is_missing(x):
            return "--"
        return f"{x * self.scale:{'+' if sign else ''}.{self.d if d is None else d}f}"


def _pm(style: _Style, stat: Stat, tex: bool) -> str:
    if stat.n == 0:
        return "--"
    mean = style.num(stat.mean)
    body = mean if is_missing(stat.std) else (f"{mean} \\pm {style.num(stat.std)}" if tex
                                        else f"{mean} ± {style.num(stat.std)}")
    return f"${body}$ ({stat.n})" if tex else f"{body} ({stat.n})"


def _paper_pm(style: _Style, cell: PaperCell | None, tex: bool) -> str:
    if cell is None:
        return ""
    mean = style.num(cell.mean, style.paper_d)
    if cell.std is None:
        return f"${mean}$" if tex else mean
    std = style.num(cell.std, style.paper_d)
    return f"${mean} \\pm {std}$" if tex else f"{mean} ± {std}"


def _paper_z(style: _Style, cell: PaperCell | None, tex: bool) -> str:
    if cell is None or is_missing(cell.diff):
        return "" if cell is None else "--"
    if cell.raw:
        return f"${style.num(cell.diff, sign=True)}^\\dagger$" if tex else f"{style.num(cell.diff, sign=True)}{RAW}"
    return f"${cell.z:+.1f}$" if tex else f"{cell.z:+.1f}"


def _rows(table: Table, style: _Style, tex: bool) -> tuple[list[str], list[list[str]]]:
    """Header and rows (classes, then mIoU) of the text formats."""
    header = ["class"]
    if table.share is not None:
        header.append("train %")
    for col in table.columns:
        header.append(col.label)
        if table.paper.get(col.label):
            header += [f"paper {table.paper[col.label].column.table}", "(ours - paper) / paper std"]
    cmp = table.comparison
    if cmp:
        header += [f"{cmp.b} - {cmp.a}", CI_HEADER, EFFECT_HEADERS[cmp.paired], f"p ({TEST_NAMES[cmp.test]})",
                   BH_HEADER, SIG_HEADER]
    rows = []
    for i in range(len(table.classes) + 1):
        is_miou = i == len(table.classes)
        row = [MIOU if is_miou else table.classes[i]]
        if table.share is not None:
            row.append("" if is_miou else f"{100 * table.share[i]:.2f}")
        for col in table.columns:
            row.append(_pm(style, col.miou if is_miou else col.cells[i], tex))
            match = table.paper.get(col.label)
            if match:
                cell = match.miou if is_miou else match.cells[i]
                row += [_paper_pm(style, cell, tex), _paper_z(style, cell, tex)]
        if cmp:
            c = _Cmp(cmp, None if is_miou else i)
            d = style.num(c.diff, sign=True)
            low, high = (style.num(x, sign=True) for x in c.ci)
            ci = "--" if "--" in (low, high) else f"[{low}, {high}]"
            g = "--" if is_missing(c.g) else f"{c.g:+.2f}"
            row += [f"${v}$" if tex and v != "--" else v for v in (d, ci, g)]
            row += [format_p(c.test.p, tex), format_p(c.p_adj, tex), c.mark]
        rows.append(row)
    return header, rows


def _notes(table: Table, style: _Style) -> list[str]:
    unit = "IoU x 100" if style.scale == 100 else "IoU"
    one = "; with one run, 0" if table.std == POPULATION else ""
    notes = [f"Cells: {unit}, mean ± {table.std} std (ddof={DDOF[table.std]}{one}) over runs "
             f"(n runs with a score for the class); the mIoU row is over each run's mIoU."]
    if table.comparison and table.comparison.paired:
        cmp = table.comparison
        notes.append(f"Runs paired by seed ({seed_list(cmp.seeds)}): mean of the per-seed differences (over the seeds "
                     f"both columns score), its "
                     f"{CI_HEADER} ({_CI_NOTES[PAIRED]}) and Cohen's d_z (mean difference / sd of the differences, "
                     f"not small-sample corrected); {TEST_LABELS[PAIRED]} ({_TEST_NOTES[PAIRED]}), two-sided, raw p "
                     f"and {BH_HEADER}, Benjamini-Hochberg adjusted over the table's classes and mIoU; the last "
                     f"column marks adjusted p < {ALPHA:g}.")
    elif table.comparison:
        test = table.comparison.test
        notes.append(f"Difference of means, its {CI_HEADER} ({_CI_NOTES[test]}) and Hedges' g (pooled sd, "
                     f"small-sample corrected); {TEST_LABELS[test]} ({_TEST_NOTES[test]}), two-sided, raw p and "
                     f"{BH_HEADER}, Benjamini-Hochberg adjusted over the table's classes and mIoU; the last "
                     f"column marks adjusted p < {ALPHA:g}.")
    if table.rarest:
        notes.append(f"{table.classes[-1]}: each run's mean IoU over the {len(table.rarest)} classes rarest in "
                     f"training ({', '.join(table.rarest)}), those its validation set holds; its train % is theirs "
                     f"together.")
    if any(table.paper.values()):
        notes.append(f"Paper: published mean ± std; (ours - paper) / paper std, or, marked {RAW}, "
                     f"ours - paper in {unit} where the published std is 0 or not given.")
    unmatched = [label for label, m in table.paper.items() if m is None]
    if unmatched:
        notes.append(f"No published column for: {', '.join(unmatched)}.")
    return notes


def to_markdown(table: Table, *, percent: bool = False, decimals: int | None = None) -> str:
    """A GitHub-flavoured Markdown table: rows classes and mIoU, columns the groups (and comparisons)."""
    style = _Style(percent, decimals)
    header, rows = _rows(table, style, tex=False)

    def line(cells):
        return "| " + " | ".join(_one_line(c).replace("|", "\\|") for c in cells) + " |"

    align = ["---"] + ["---:"] * (len(header) - 1)
    if table.comparison:
        align[-1] = ":---:"
    out = [line(header), "|" + "|".join(align) + "|", *(line(r) for r in rows), ""]
    out += [_one_line(note) for note in _notes(table, style)]
    return "\n".join(out) + "\n"


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    text = "".join(_TEX_ESCAPES.get(ch, ch) for ch in _one_line(text))
    return text.replace("->", r"$\to$").replace("±", r"$\pm$").replace("<", "$<$")


def to_latex(table: Table, *, percent: bool = False, decimals: int | None = None) -> str:
    """A booktabs ``tabular`` with the same rows and columns as `to_markdown` (needs ``\\usepackage{booktabs}``)."""
    style = _Style(percent, decimals)
    header, rows = _rows(table, style, tex=True)
    spec = "l" + "r" * (len(header) - 1)
    if table.comparison:
        spec = spec[:-1] + "c"
    out = [f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
           " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    for i, row in enumerate(rows):
        if i == len(rows) - 1:
            out.append(r"\midrule")
        cells = [_tex(row[0])] + [c if c.startswith("$") else _tex(c) for c in row[1:]]
        out.append(" & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out += [f"% {_one_line(note)}" for note in _notes(table, style)]
    return "\n".join(out) + "\n"


def _csv_num(x, scale: float = 1.0) -> str:
    return "" if is_missing(x) else repr(float(x) * scale)


def to_csv(table: Table, *, percent: bool = False) -> str:
    """The same numbers at full precision, one row per class and mIoU; empty cells for none.

    Columns: ``class``, ``train share`` (with class shares), per group
    ``<label> mean|std|n`` (and ``<label> paper mean|paper std|ours-paper|(ours-paper)/paper std``
    with a matched published column), and with two groups ``difference``
    (b - a), ``se`` (from the std), ``ci low``, ``ci high`` (95%, of b - a, as the test), ``hedges g``,
    ``t`` (of b against a), ``df``, ``p``, ``p (BH)`` (Benjamini-Hochberg adjusted over the classes
    and mIoU), ``p (BH) < 0.05`` (``*`` or empty);
    last, on every row, ``std`` (``sample (ddof=1)`` or ``population (ddof=0)``) and, with two groups,
    ``test`` (``Welch's t-test``, ``Student's t-test`` or ``paired t-test``). Paired, ``difference``
    is the mean per-seed difference, ``se`` that of the differences, ``cohen d_z`` stands where
    ``hedges g`` does, and ``df`` is the number of seeds both score, less one.
    """
    scale = 100.0 if percent else 1.0
    header = ["class"] + (["train share"] if table.share is not None else [])
    for col in table.columns:
        header += [f"{col.label} mean", f"{col.label} std", f"{col.label} n"]
        if table.paper.get(col.label):
            header += [f"{col.label} paper mean", f"{col.label} paper std", f"{col.label} ours-paper",
                       f"{col.label} (ours-paper)/paper std"]
    cmp = table.comparison
    if cmp:
        header += ["difference", "se", "ci low", "ci high", _CSV_EFFECT[cmp.paired], "t", "df", "p", BH_HEADER,
                   SIG_HEADER]
    header.append("std")
    if cmp:
        header.append("test")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(map(_one_line, header))
    for i in range(len(table.classes) + 1):
        is_miou = i == len(table.classes)
        row = [MIOU if is_miou else table.classes[i]]
        if table.share is not None:
            row.append("" if is_miou else _csv_num(table.share[i]))
        for col in table.columns:
            stat = col.miou if is_miou else col.cells[i]
            row += [_csv_num(stat.mean, scale), _csv_num(stat.std, scale), str(stat.n)]
            match = table.paper.get(col.label)
            if match:
                cell = match.miou if is_miou else match.cells[i]
                row += ["", "", "", ""] if cell is None else [
                    _csv_num(cell.mean, scale), _csv_num(cell.std, scale), _csv_num(cell.diff, scale),
                    _csv_num(cell.z)]
        if cmp:
            c = _Cmp(cmp, None if is_miou else i)
            row += [_csv_num(c.diff, scale), _csv_num(c.se, scale), _csv_num(c.ci[0], scale),
                    _csv_num(c.ci[1], scale), _csv_num(c.g), _csv_num(c.test.t), _csv_num(c.test.df),
                    _csv_num(c.test.p), _csv_num(c.p_adj), c.mark]
        row.append(STD_LABELS[table.std])
        if cmp:
            row.append(TEST_LABELS[cmp.test])
        writer.writerow(map(_one_line, row))
    return buffer.getvalue()


RENDER = {"md": to_markdown, "tex": to_latex, "csv": to_csv}
