"""The overview's throughput chart: successes and failures per minute, drawn on the server
as an inline SVG (no chart library, no script)."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

from .data import Minute

WIDTH = 720
HEIGHT = 160
LEFT = 40  # room for the y axis labels
BOTTOM = 20  # room for the time labels


def throughput_svg(minutes: Sequence[Minute]) -> Markup:
    """Stacked bars, one per minute: succeeded (green) below failed (red); each bar's
    tooltip gives its minute and both counts."""
    plot_w, plot_h = WIDTH - LEFT, HEIGHT - BOTTOM
    top = max([m.succeeded + m.failed for m in minutes] + [1])
    slot = plot_w / max(len(minutes), 1)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="{WIDTH}" height="{HEIGHT}" aria-label="jobs finished per minute, last hour">',
        f'<line x1="{LEFT}" y1="{plot_h}" x2="{WIDTH}" y2="{plot_h}" class="axis"/>',
        f'<text x="{LEFT - 4}" y="10" text-anchor="end" class="label">{top}</text>',
        f'<text x="{LEFT - 4}" y="{plot_h}" text-anchor="end" class="label">0</text>',
    ]
    for i, m in enumerate(minutes):
        x = LEFT + i * slot
        ok_h = plot_h * m.succeeded / top
        bad_h = plot_h * m.failed / top
        label = escape(f"{m.minute:%H:%M} UTC: {m.succeeded} succeeded, {m.failed} failed")
        parts.append(f"<g><title>{label}</title>")
        if m.succeeded:
            parts.append(
                f'<rect class="ok" x="{x:.1f}" y="{plot_h - ok_h:.1f}" '
                f'width="{slot - 1:.1f}" height="{ok_h:.1f}"/>'
            )
        if m.failed:
            parts.append(
                f'<rect class="bad" x="{x:.1f}" y="{plot_h - ok_h - bad_h:.1f}" '
                f'width="{slot - 1:.1f}" height="{bad_h:.1f}"/>'
            )
        # an empty minute still has a tooltip
        parts.append(
            f'<rect class="hit" x="{x:.1f}" y="0" width="{slot:.1f}" height="{plot_h}"/></g>'
        )
        if i % 15 == 0 or i == len(minutes) - 1:
            # the last label ends at the right edge instead of running past it
            last = i == len(minutes) - 1
            anchor = "end" if last else "start"
            parts.append(
                f'<text x="{x + slot if last else x:.1f}" y="{HEIGHT - 4}" class="label" '
                f'text-anchor="{anchor}">{m.minute:%H:%M}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))
