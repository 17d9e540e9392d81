"""Charts as inline SVG, rendered on the server: no script, no CDN, no build step; a page that
works offline. Every bar carries its series, label and value (`data-*`, and a `<title>` a mouse
shows), so what is drawn can be read back exactly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

MAX_LABELS = 16  # labels under the bars at most
COLORS = ("#4c78a8", "#72b7b2", "#f58518", "#54a24b", "#e45756")


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def bars(title: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], *, width: int = 720,
         height: int = 240, money: bool = False) -> str:  # fmt: skip
    """Grouped bars: one group per label, one bar per series, with a legend."""
    names = list(series)
    top = float(max((v for values in series.values() for v in values), default=0) or 1)
    pad_left, pad_bottom, pad_top = 56, 36, 48
    plot_w, plot_h = width - pad_left - 8, height - pad_bottom - pad_top
    group_w = plot_w / max(len(labels), 1)
    bar_w = max(group_w / (len(names) + 1), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" data-chart="{_attr(title)}"><title>{escape(title)}</title>',
             f'<text x="{pad_left}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>']  # fmt: skip
    for i, name in enumerate(names):  # the legend, under the title
        lx = pad_left + i * 110
        parts.append(f'<rect x="{lx}" y="24" width="10" height="10" fill="{COLORS[i % len(COLORS)]}"/>'
                     f'<text x="{lx + 14}" y="33" font-size="11">{escape(name)}</text>')  # fmt: skip
    base = pad_top + plot_h
    parts.append(f'<line x1="{pad_left}" y1="{base}" x2="{width - 8}" y2="{base}" stroke="#999"/>')
    parts.append(f'<text x="4" y="{pad_top + 10}" font-size="10">{_fmt(top, money)}</text>')
    every = max(1, -(-len(labels) // MAX_LABELS))  # a label on every n-th group: they must not overlap
    for g, label in enumerate(labels):
        x0 = pad_left + g * group_w
        for i, name in enumerate(names):
            value = series[name][g]
            h = plot_h * float(value) / top
            x = x0 + (i + 0.5) * bar_w
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{base - h:.1f}" width="{bar_w * 0.9:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[i % len(COLORS)]}" data-series="{_attr(name)}" data-label="{_attr(label)}" '
                f'data-value="{_attr(value)}"><title>{escape(label)} · {escape(name)}: {_fmt(value, money)}'
                "</title></rect>"
            )
        if g % every == 0:
            parts.append(f'<text x="{x0 + group_w / 2:.1f}" y="{base + 14}" font-size="10" text-anchor="middle">'
                         f"{escape(_short(label))}</text>")  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)


def _short(label: str) -> str:
    """A day (YYYY-MM-DD) as the seller writes it (DD/MM); anything else cut to 12 characters."""
    if len(label) == 10 and label[4] == "-" and label[7] == "-":
        return f"{label[8:]}/{label[5:7]}"
    return label[:12]


def _fmt(value: float, money: bool) -> str:
    if money:
        return f"R$ {value:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".")
    return f"{value:g}"
