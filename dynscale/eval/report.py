"""The one report writer: every command's curves as a text table, Markdown, CSV, JSON and a plot.

Two layouts share the same cells: *wide* puts curves side by side, one row per knob value
(when every curve varies the same single knob, as a width sweep does), and *long* gives one
row per operating point (adaptive methods, several knobs).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from ..files import atomic_write, write_json
from .points import Curve, OperatingPoint, curves_to_json

LAYOUTS = ("auto", "wide", "long")


def human_count(n: float) -> str:
    """``1234567 -> "1.23M"``."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


def _latency_keys(curves: Sequence[Curve]) -> list[tuple[str, int]]:
    """(runtime, batch) pairs measured: by batch size, runtimes in the order they were timed."""
    keys = dict.fromkeys((lat.runtime, lat.batch) for c in curves for p in c.points for lat in p.latency)
    runtimes = list(dict.fromkeys(runtime for runtime, _ in keys))
    return sorted(keys, key=lambda k: (k[1], runtimes.index(k[0])))


def _extra_columns(curves: Sequence[Curve]) -> list[tuple[str, str | None]]:
    """(extra key, sub-key) pairs shown as columns: numbers, and dicts of fractions per node."""
    columns: dict[tuple[str, str | None], None] = {}
    for c in curves:
        for p in c.points:
            for key, value in p.extra.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    columns[key, None] = None
                elif isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
                    for sub in value:
                        columns[key, sub] = None
    return list(columns)


def _extra_header(key: str, sub: str | None) -> str:
    return key.replace("_", " ") if sub is None else f"% {key} {sub}"


def _extra_cell(point: OperatingPoint, key: str, sub: str | None) -> str:
    value = point.extra.get(key)
    if sub is not None:
        value = value.get(sub) if isinstance(value, dict) else None
        return "–" if value is None else f"{100 * value:.1f}"
    return "–" if value is None else f"{value:.4g}"


def _single_knob(curves: Sequence[Curve]) -> str | None:
    names = {tuple(p.knobs) for c in curves for p in c.points}
    return names.pop()[0] if len(names) == 1 and len(next(iter(names))) == 1 else None


def _layout(curves: Sequence[Curve], layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown table layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout != "auto":
        return layout
    per_node = any(sub is not None for _, sub in _extra_columns(curves))  # only the long layout shows them
    return "wide" if _single_knob(curves) and not per_node else "long"


def _versus_keys(curves: Sequence[Curve], key: tuple[str, int]) -> list[str]:
    """The other runtimes the points timed at ``key`` were related to (the reference timed there)."""
    return list(dict.fromkeys(other for c in curves for p in c.points
                              if (lat := p.latency_at(*key)) is not None for other in lat.versus))


def _long_rows(curves: Sequence[Curve]) -> tuple[list[str], list[list[str]]]:
    keys = _latency_keys(curves)
    versus = {key: _versus_keys(curves, key) for key in keys}
    extras = _extra_columns(curves)
    bitops = any(p.bitops_ratio is not None for c in curves for p in c.points)
    header = ["curve", "setting", "acc %", "MACs", "MAC ratio", *(["BitOps ratio"] if bitops else []), "params"]
    header += ["saving"] if keys else []
    for runtime, batch in keys:
        header += [f"ms {runtime}@{batch}", f"ratio {runtime}@{batch}", f"ratio/MAC {runtime}@{batch}"]
        header += [f"ratio {runtime}@{batch} vs {other}" for other in versus[runtime, batch]]
    header += [_extra_header(*e) for e in extras]
    rows = []
    for c in curves:
        for p in c.points:
            row = [c.label, p.label, f"{100 * p.accuracy:.2f}", human_count(p.macs), f"{p.macs_ratio:.3f}"]
            row += [f"{p.bitops_ratio:.3f}" if p.bitops_ratio is not None else "–"] if bitops else []
            row.append(human_count(p.params))
            row += [p.saving] if keys else []
            for runtime, batch in keys:
                lat = p.latency_at(runtime, batch)
                row += ([f"{lat.ms:.4f}", f"{lat.ratio:.3f}", f"{lat.ratio / p.macs_ratio:.2f}"] if lat
                        else ["–", "–", "–"])
                row += [f"{lat.versus[o]:.3f}" if lat and o in lat.versus else "–" for o in versus[runtime, batch]]
            row += [_extra_cell(p, *e) for e in extras]
            rows.append(row)
    return header, rows


def _wide_text(curves: Sequence[Curve]) -> str:
    knob = _single_knob(curves)
    keys = _latency_keys(curves)
    extras = [e for e in _extra_columns(curves) if e[1] is None]
    per_curve = ["acc %", "MACs", "ratio", *(_extra_header(*e) for e in extras), *(f"ms {r}@{b}" for r, b in keys)]
    values = sorted({p.knobs[knob] for c in curves for p in c.points})
    cell_width = max(9, *(len(h) for h in per_curve))
    blocks = [max(len(c.label), cell_width * len(per_curve) + len(per_curve) - 1) for c in curves]

    def cells(items: Sequence[str], block: int) -> str:
        return f"{' '.join(f'{v:>{cell_width}}' for v in items):>{block}}"

    header1 = f"{'':>6} | " + " | ".join(f"{c.label:^{b}}" for c, b in zip(curves, blocks, strict=True))
    header2 = f"{knob:>6} | " + " | ".join(cells(per_curve, b) for b in blocks)
    lines = [header1.rstrip(), header2, "-" * len(header2)]
    for value in values:
        row = [f"{value:>6.3g}"]
        for c, block in zip(curves, blocks, strict=True):
            p = next((p for p in c.points if p.knobs[knob] == value), None)
            if p is None:
                row.append(cells(["-"] * len(per_curve), block))
                continue
            lats = [p.latency_at(r, b) for r, b in keys]
            row.append(cells([f"{100 * p.accuracy:.2f}", human_count(p.macs), f"{p.macs_ratio:.3f}",
                              *(_extra_cell(p, *e) for e in extras),
                              *(f"{lat.ms:.4f}" if lat else "-" for lat in lats)], block))
        lines.append(" | ".join(row))
    return "\n".join(lines)


def _wide_markdown(curves: Sequence[Curve]) -> tuple[list[str], list[list[str]]]:
    knob = _single_knob(curves)
    keys = _latency_keys(curves)
    extras = [e for e in _extra_columns(curves) if e[1] is None]
    values = sorted({p.knobs[knob] for c in curves for p in c.points}, reverse=True)
    points = [{p.knobs[knob]: p for p in c.points} for c in curves]
    shared = all(len({round(pts[v].macs_ratio, 6) for pts in points if v in pts}) == 1 for v in values)
    header = [knob] + (["MAC ratio"] if shared else [])
    for c in curves:
        header += [f"{c.label} acc %"] + ([] if shared else [f"{c.label} MAC ratio"])
    header += [f"{c.label} {_extra_header(*e)}" for c in curves for e in extras
               if any(e[0] in p.extra for p in c.points)]
    header += [f"{c.label} latency ratio {r}@{b}" for c in curves for r, b in keys]
    rows = []
    for v in values:
        ref = next(pts[v] for pts in points if v in pts)
        row = [f"{v:g}"] + ([f"{ref.macs_ratio:.3f}"] if shared else [])
        for pts in points:
            p = pts.get(v)
            row += [f"{100 * p.accuracy:.2f}" if p else "–"] + ([] if shared else [f"{p.macs_ratio:.3f}" if p else "–"])
        for c, pts in zip(curves, points, strict=True):
            row += [_extra_cell(pts[v], *e) if v in pts else "–" for e in extras
                    if any(e[0] in p.extra for p in c.points)]
        for pts in points:
            for r, b in keys:
                lat = pts[v].latency_at(r, b) if v in pts else None
                row.append(f"{lat.ratio:.2f}" if lat else "–")
        rows.append(row)
    return header, rows


def render_table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A table as Markdown (a ``|`` inside a cell escaped) or as aligned plain text."""
    if markdown:
        def line(cells: list[str]) -> str:
            return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
        return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(f"{v:>{w}}" for v, w in zip(cells, widths, strict=True))  # noqa: E731
    return "\n".join([fmt(header), "-" * len(fmt(header))] + [fmt(r) for r in rows])


def format_table(curves: Sequence[Curve], markdown: bool = False, layout: str = "auto") -> str:
    """Formats curves as a text or Markdown table.

    Args:
        curves: the curves.
        markdown: Markdown instead of aligned text.
        layout: ``wide`` (curves side by side per knob value), ``long`` (a row per point) or
            ``auto`` (wide when every curve varies the same single knob and no point has per-node
            results).
    """
    if _layout(curves, layout) == "wide":
        return render_table(*_wide_markdown(curves), markdown=True) if markdown else _wide_text(curves)
    return render_table(*_long_rows(curves), markdown=markdown)


def to_csv(curves: Sequence[Curve]) -> str:
    """One CSV row per operating point, with every measured value."""
    keys = _latency_keys(curves)
    knobs = list(dict.fromkeys(k for c in curves for p in c.points for k in p.knobs))
    extras = _extra_columns(curves)
    header = ["curve", "run", "data", "method", "setting", *(f"knob:{k}" for k in knobs), "accuracy", "macs",
              "macs_ratio", "bitops_ratio", "params", "measured", "saving"]
    versus = {key: _versus_keys(curves, key) for key in keys}
    for runtime, batch in keys:
        header += [f"{runtime}@{batch} {f}" for f in ("ms", "ms_iqr", "us_per_example", "ratio", "ratio_iqr",
                                                       "device")]
        header += [f"{runtime}@{batch} ratio vs {other}" for other in versus[runtime, batch]]
    header += [f"{k}:{s}" if s else k for k, s in extras]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for c in curves:
        for p in c.points:
            row = [c.label, c.run or "", c.data or "", p.method, p.label, *(p.knobs.get(k, "") for k in knobs),
                   p.accuracy, p.macs, p.macs_ratio, "" if p.bitops_ratio is None else p.bitops_ratio, p.params,
                   p.measured, p.saving]
            for runtime, batch in keys:
                lat = p.latency_at(runtime, batch)
                row += ([lat.ms, lat.ms_iqr, lat.us_per_example, lat.ratio, lat.ratio_iqr, lat.device] if lat
                        else [""] * 6)
                row += [lat.versus.get(o, "") if lat else "" for o in versus[runtime, batch]]
            for key, sub in extras:
                value = p.extra.get(key)
                row.append((value.get(sub, "") if isinstance(value, dict) else "") if sub else
                           ("" if value is None else value))
            writer.writerow(row)
    return out.getvalue()


def plot(curves: Sequence[Curve], path: str | Path, title: str = "Accuracy vs computation",
         xlabel: str = "MACs relative to the full network", x: str = "macs") -> None:
    """Plots accuracy against a cost ratio, one line per curve, and saves a PNG atomically.

    Args:
        curves: the curves.
        path: the PNG to write.
        title: the plot's title.
        xlabel: the x axis label.
        x: the cost on the x axis: ``macs`` (MAC ratio) or ``bitops`` (BitOps ratio).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def cost(p: OperatingPoint) -> float | None:
        return p.macs_ratio if x == "macs" else p.bitops_ratio

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for c in curves:
        pairs = sorted((cost(p), 100 * p.accuracy) for p in c.points if cost(p) is not None)
        style = {"linestyle": "--", "linewidth": 2.5, "color": "black", "alpha": 0.6} if c.curve == "envelope" else {}
        ax.plot([a for a, _ in pairs], [b for _, b in pairs], marker="o", label=c.label, **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.set_xlim(0, max([1.02] + [1.02 * cost(p) for c in curves for p in c.points if cost(p) is not None]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    atomic_write(Path(path), lambda p: fig.savefig(p, dpi=120, format="png"))
    plt.close(fig)


def write_report(curves: Sequence[Curve], json: str | Path | None = None, csv: str | Path | None = None,
                 markdown: str | Path | None = None, png: str | Path | None = None, title: str | None = None,
                 xlabel: str | None = None, meta: dict | None = None, layout: str = "auto",
                 x: str = "macs", note: str | None = None) -> list[Path]:
    """Writes the requested forms of a report, each atomically.

    Args:
        curves: the curves.
        json, csv, markdown, png: where to write each form (None skips it).
        title: the plot's title.
        xlabel: the plot's x label.
        meta: extra top-level JSON fields (timing settings, titles).
        layout: the Markdown table's layout (see :func:`format_table`).
        x: the plot's cost axis (see :func:`plot`).
        note: Markdown put under the Markdown table (e.g. the contenders' training budgets).

    Returns:
        The paths written.
    """
    written = []
    if json:
        written.append(write_json(json, curves_to_json(list(curves), **(meta or {}))))
    if csv:
        text = to_csv(curves)
        atomic_write(Path(csv), lambda p: p.write_text(text))
        written.append(Path(csv))
    if markdown:
        text = format_table(curves, markdown=True, layout=layout) + "\n" + (f"\n{note}\n" if note else "")
        atomic_write(Path(markdown), lambda p: p.write_text(text))
        written.append(Path(markdown))
    if png:
        plot(curves, png, **({"title": title} if title else {}), **({"xlabel": xlabel} if xlabel else {}), x=x)
        written.append(Path(png))
    return written
