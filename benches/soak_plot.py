#!/usr/bin/env python3
"""Draws benches/soak.sh's samples (RSS and outbox size over time) as one SVG.

Usage: soak_plot.py SAMPLES.csv OUT.svg. Standard library only, so the soak needs
nothing installed beyond python3.
"""
import csv
import sys

W, H, PAD = 900, 300, 60


def panel(rows, key, label, color, top):
    xs = [float(r["seconds"]) for r in rows if r[key]]
    ys = [float(r[key]) / 1048576 for r in rows if r[key]]
    if not xs:
        return ""
    xmax = max(max(xs), 1.0)
    ymax = max(max(ys) * 1.15, 1.0)
    sx = lambda x: PAD + x / xmax * (W - 2 * PAD)
    sy = lambda y: top + H - PAD - y / ymax * (H - 2 * PAD)
    pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    out = [
        f'<text x="{W / 2}" y="{top + 22}" text-anchor="middle" font-size="15">{label}</text>',
        f'<line x1="{PAD}" y1="{top + H - PAD}" x2="{W - PAD}" y2="{top + H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{top + PAD}" x2="{PAD}" y2="{top + H - PAD}" stroke="black"/>',
        f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>',
    ]
    for i in range(5):
        y = ymax * i / 4
        out.append(
            f'<text x="{PAD - 6}" y="{sy(y) + 4:.1f}" text-anchor="end" font-size="11">{y:.0f}</text>'
        )
        x = xmax * i / 4
        out.append(
            f'<text x="{sx(x):.1f}" y="{top + H - PAD + 16}" text-anchor="middle" font-size="11">{x / 60:.0f} min</text>'
        )
    out.append(
        f'<text x="14" y="{top + H / 2}" font-size="11" transform="rotate(-90 14 {top + H / 2})">MiB</text>'
    )
    return "\n".join(out)


def main():
    rows = list(csv.DictReader(open(sys.argv[1])))
    body = [
        panel(rows, "rss_bytes", "siphook resident memory (RSS)", "#1f77b4", 0),
        panel(rows, "outbox_du_bytes", "outbox on disk (du of the outbox directory)", "#d62728", H),
    ]
    with open(sys.argv[2], "w") as f:
        f.write(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{2 * H}" '
            f'font-family="sans-serif"><rect width="100%" height="100%" fill="white"/>\n'
        )
        f.write("\n".join(body))
        f.write("\n</svg>\n")


if __name__ == "__main__":
    main()
