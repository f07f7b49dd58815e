"""Draw docs/img/fleet.svg, the fleet architecture of docs/fleet.md: devices -> site brokers
-> bridge -> central broker or cluster -> consumers, each arrow labelled with what it
guarantees.

Run ``.venv/bin/python docs/img/fleet.py`` (matplotlib, the ``[plot]`` extra) after changing
it; ``--png FILE`` also writes a bitmap to look at. The SVG keeps its text as text (small,
searchable) and is byte-for-byte reproducible (no date, a fixed id salt).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

__all__ = ["draw", "main"]

HERE = Path(__file__).resolve().parent
OUT = HERE / "fleet.svg"
W, H = 100.0, 60.0  #: The drawing's coordinates (one unit is 0.11 inch).

DEVICE = "#e8f1fb"  #: Fill of a device (an agent with its outbox).
BROKER = "#fdf1dc"  #: Fill of a broker.
CONSUMER = "#e9f5e9"  #: Fill of a consumer.
EDGE = "#444444"
GOOD = "#1f6f3a"  #: Text of a guarantee.
LIMIT = "#a33a1f"  #: Text of a limit.
BLUE = "#1f4f8f"  #: The controller's requests.


def _box(
    ax: Any,
    x: float,
    y: float,
    w: float,
    h: float,
    fill: str,
    text: str,
    size: float = 8.0,
    weight: str = "normal",
    dashed: bool = False,
) -> None:
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.3,rounding_size=0.8",
            fc=fill,
            ec=EDGE,
            lw=0.9,
            ls="--" if dashed else "-",
        )
    )
    if text:
        ax.text(
            x + w / 2,
            y + h / 2,
            text,
            ha="center",
            va="center",
            fontsize=size,
            weight=weight,
            linespacing=1.25,
        )


def _arrow(
    ax: Any,
    start: tuple[float, float],
    end: tuple[float, float],
    color: str = EDGE,
    style: str = "-|>",
    dashed: bool = False,
    rad: float = 0.0,
) -> None:
    ax.annotate(
        "",
        xy=end,
        xytext=start,
        arrowprops={
            "arrowstyle": style,
            "color": color,
            "lw": 1.1,
            "shrinkA": 2,
            "shrinkB": 2,
            "ls": "--" if dashed else "-",
            "connectionstyle": f"arc3,rad={rad}",
        },
    )


def _note(
    ax: Any, x: float, y: float, text: str, color: str = GOOD, ha: str = "center", size: float = 6.8
) -> None:
    ax.text(x, y, text, ha=ha, va="center", fontsize=size, color=color, linespacing=1.2)


def _site(ax: Any, y: float, name: str) -> None:
    """One site: three devices on a site Mosquitto (its bridge is drawn by :func:`draw`)."""
    ax.text(1.0, y + 14.2, f"site-{name}", fontsize=7.5, style="italic", color=EDGE)
    for i in range(3):
        dy = y + 9.2 - i * 4.6
        _box(ax, 1.5, dy, 13.0, 3.2, DEVICE, f"agent {name}-{i + 1}  [outbox]", size=6.8)
        _arrow(ax, (15.0, dy + 1.6), (24.6, y + 6.4))
    _box(ax, 25.0, y + 3.4, 11.5, 6.0, BROKER, f"Mosquitto\nsite-{name}", size=7.5)


def _central(ax: Any) -> None:
    """The central side: a cluster of nodes (EMQX, HiveMQ, VerneMQ) or one Mosquitto, and
    the bridges from the sites into it."""
    _box(ax, 52.0, 8.0, 17.0, 43.0, BROKER, "")
    ax.text(
        60.5,
        48.0,
        "EMQX, HiveMQ,\nVerneMQ, or one\nMosquitto",
        ha="center",
        va="center",
        fontsize=7.2,
        linespacing=1.2,
    )
    for i, y in enumerate((35.0, 22.0, 11.0)):
        _box(ax, 54.0, y, 13.0, 6.0, "#fff8ec", f"node {i + 1}", size=7.5)
    for y, node in ((44.4, 38.0), (27.4, 25.0)):  # the sites' brokers, at their middle
        _arrow(ax, (36.9, y), (53.7, node), color=GOOD, style="<|-|>")
    _note(
        ax,
        44.3,
        47.2,
        "bridge, cleansession false,\nQoS 1: state out, model/set in;\n"
        "queued at the site broker\nwhile the link is down",
    )
    _note(
        ax,
        44.3,
        33.0,
        "link down: the central\nbroker sets the site's\n"
        "fleet/sites/<site>/bridge\nto 0 (its will)",
        color=LIMIT,
    )


def _consumers(ax: Any) -> None:
    """Home Assistant, dashboards and the fleet controller, reading the retained state."""
    _box(ax, 79.0, 39.0, 19.0, 7.0, CONSUMER, "Home Assistant\n(discovery per device)", size=7.5)
    _box(ax, 79.0, 27.0, 19.0, 7.0, CONSUMER, "dashboards, recorders", size=7.5)
    _box(
        ax,
        79.0,
        10.0,
        19.0,
        12.0,
        CONSUMER,
        "sensorcast fleet\nstatus | rollout\n(no TensorFlow)",
        size=7.5,
        weight="bold",
    )
    for y in (42.5, 30.5, 18.5):
        _arrow(ax, (69.4, y), (78.6, y))
    _arrow(ax, (78.6, 13.0), (69.4, 13.0), color=BLUE)
    _note(ax, 74.0, 10.6, "model/set\n(signed)", color=BLUE, size=6.3)
    _note(
        ax,
        88.5,
        52.0,
        "read the retained state; a site\nwhose bridge is 0 shows "
        "its\ndevices unreachable, not fresh",
        color=LIMIT,
        size=6.6,
    )


def draw(path: Path = OUT, png: Optional[Path] = None) -> None:
    """Draw the figure to ``path`` (SVG), and to ``png`` if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(
        {"svg.fonttype": "none", "svg.hashsalt": "sensorcast-fleet", "font.family": "DejaVu Sans"}
    )
    fig = plt.figure(figsize=(W * 0.11, H * 0.11))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, W)
    ax.set_ylim(0, H)
    ax.axis("off")
    for x, title in (
        (1.0, "devices"),
        (25.0, "site brokers"),
        (52.0, "central"),
        (79.0, "consumers"),
    ):
        ax.text(x, H - 2.0, title, fontsize=9, weight="bold")
    _site(ax, 38.0, "a")
    _site(ax, 21.0, "b")
    _note(ax, 20.0, 36.4, "QoS 1 from a\ndurable outbox:\nnothing lost")

    # A device on the cluster itself, with a list of its nodes to fail over between.
    ax.text(1.0, 15.2, "no site broker", fontsize=7.5, style="italic", color=EDGE)
    _box(ax, 1.5, 8.0, 13.0, 5.0, DEVICE, "agent c-1\nurl = [node 2, node 3]", size=6.8)
    _arrow(ax, (15.0, 11.5), (53.7, 24.0))
    _arrow(ax, (15.0, 9.5), (53.7, 13.0), dashed=True)
    _note(
        ax,
        30.0,
        5.6,
        "node 2 down: the next in the list; a cluster keeps the\n"
        "session, separate brokers do not (the outbox still holds)",
    )
    _central(ax)
    _consumers(ax)
    _note(
        ax,
        50.0,
        2.0,
        "not guaranteed: a site broker that loses its disk, a queue beyond "
        "its limits (max_queued_messages), sessions across separate non-clustered "
        "brokers",
        color=LIMIT,
        size=6.8,
    )

    fig.savefig(path, format="svg", metadata={"Date": None})
    if png is not None:
        fig.savefig(png, format="png", dpi=110)
    plt.close(fig)


def main() -> None:
    """The command line: ``[--png FILE]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, help="also write a PNG here, to look at")
    args = parser.parse_args()
    draw(OUT, args.png)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
