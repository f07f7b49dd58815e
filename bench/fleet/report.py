"""RESULTS-fleet.md from the benchmark's results (``results.json``)."""

from __future__ import annotations

from typing import Any, Optional

from bench.harness.markdown import mb, table

__all__ = ["render"]


def _s(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


def _cli_row(name: str, run: dict[str, Any]) -> list[str]:
    return [
        name,
        f"{_s(run['wall_s'])} ({_s(run['wall_min_s'])}-{_s(run['wall_max_s'])})",
        _s(run["cpu_s"]),
        f"{mb(run['peak_rss_mb'])} (max {mb(run['peak_rss_max_mb'])})",
        ",".join(str(c) for c in run["codes"]),
    ]


def _head(r: dict[str, Any]) -> list[str]:
    h = r["host"]
    pkgs = ", ".join(f"{k} {v}" for k, v in r["packages"].items())
    return [
        f"# Fleet benchmark: {r['devices']:,} simulated devices on one Mosquitto",
        "",
        f"Measured {h['date']} on {h['cpu']}, {h['usable_cores']} of {h['cores']} cores, "
        f"{h['memory']} RAM, {h['system']}, Python {h['python']}; {r['mosquitto']}; {pkgs}.",
        f"Commit: {r['commit']}. Command: `{r['command'].strip()}` "
        f"({r['elapsed_s']:.0f} s in all). Figures, not pass/fail; the machine is shared.",
        "",
        "Each simulated device has the three retained messages a real agent keeps on the "
        "broker (status, metrics, one stream's quality report), in the shapes a real agent "
        f"published at the start of the run (metrics {r['sizes']['metrics']:,} B, quality "
        f"{r['sizes']['quality']:,} B with its shadow section); a load generator (one MQTT "
        "client) publishes them and answers model/set as a device does (install as shadow "
        "after checking the sha256, promote, drop_shadow; state on model/state, then fresh "
        "reports). Not 1,000 agents: the controller only sees the broker.",
        "",
    ]


def _status(r: dict[str, Any]) -> list[str]:
    s = r["status"]
    n = r["devices"]
    return [
        f"## `sensorcast fleet status` over {n:,} devices",
        "",
        f"{n:,} devices x 3 retained messages published (QoS 1, acknowledged) in "
        f"{_s(r['publish_s'])} s; Mosquitto's RSS {mb(r['broker_rss_idle_mb'])} MB idle, "
        f"{mb(r['broker_rss_mb'])} MB holding them. A child process each run, "
        f"{s['table']['rounds']} run(s): median wall s (min-max), CPU s, peak RSS MB "
        "(the child's `VmHWM`), exit codes.",
        "",
        *table(
            ["command", "wall s", "CPU s", "peak RSS MB", "exit"],
            [
                _cli_row("`fleet status` on an empty prefix (start-up)", s["empty"]),
                _cli_row(f"`fleet status` ({s['table_lines']:,} lines)", s["table"]),
                _cli_row(f"`fleet status --json` ({s['json_devices']} devices)", s["json"]),
            ],
        ),
        "",
    ]


def _default_queue(r: dict[str, Any]) -> list[str]:
    d = r.get("default_queue")
    if not d:
        return []
    return [
        f"With Mosquitto's default queue per client (`max_queued_messages 1000`, the other "
        f"settings as above), `fleet status --json` over {d['devices']:,} devices "
        f"saw {d['devices_seen']} of them, `complete`: {d['complete']}, exit {d['code']} "
        f"({_s(d['wall_s'])} s): the retained messages a controller reads on subscribing "
        "count against that queue.",
        "",
    ]


def _decision(r: dict[str, Any]) -> list[str]:
    d = r["decision"]
    good, bad, traced = d["good"], d["bad"], d["good_traced"]
    rows = [
        [g["phase"], _ms(g), str(g["actions"]), _ms(b), str(b["actions"])]
        for g, b in zip(good["rounds"], bad["rounds"])
    ]
    return [
        f"## One rollout decision over {r['devices']:,} devices (in process)",
        "",
        "The controller's pure `decide(plan, fleet, now, policy)` on one wave of every device, "
        "the devices answering between calls (not timed), once with every shadow good and "
        f"once with {bad['bad']} of them worse (`mae_ratio` 1.6 > the default gate's 1.05). "
        f"Wall ms of each call, median of {good.get('runs', 1)} runs (min-max), and the "
        "requests it returned:",
        "",
        *table(["step", "all good: ms", "requests", "30 % worse: ms", "requests"], rows),
        "",
        f"All good: {good['status']} ({_steps(good['steps'])}). 30 % worse: {bad['status']}: "
        f"{bad['reason']} ({_steps(bad['steps'])}). The plan file ({good['plan_bytes']:,} B "
        f"for {r['devices']:,} devices) is rewritten atomically and synced after every "
        f"change. Memory (tracemalloc, another run): the view of {r['devices']:,} devices "
        f"{mb(traced['view_mb'])} MB, peak while deciding {mb(traced['decide_peak_mb'])} MB.",
        "",
    ]


def _ms(step: dict[str, Any]) -> str:
    if "ms_min" not in step:
        return f"{step['ms']:.1f}"
    return f"{step['ms']:.1f} ({step['ms_min']:.1f}-{step['ms_max']:.1f})"


def _steps(steps: dict[str, int]) -> str:
    return ", ".join(f"{n} {step}" for step, n in sorted(steps.items()))


def _rollout_row(name: str, run: dict[str, Any]) -> list[str]:
    answers = ", ".join(f"{n} {a}" for a, n in sorted(run["answers"].items())) or "-"
    return [
        name, f"{run['waves']}", f"{run['soak_s']:g}", _s(run["wall_s"]), _s(run["cpu_s"]),
        mb(run["peak_rss_mb"]), str(run["code"]), answers,
    ]  # fmt: skip


def _timeline(run: dict[str, Any]) -> str:
    steps = run.get("steps") or {}
    spans = sorted(steps.items(), key=lambda kv: kv[1][0])
    return ", ".join(f"{step} {a:.1f}-{b:.1f} s" for step, (a, b) in spans) or "-"


def _rollouts(r: dict[str, Any]) -> list[str]:
    if "rollout_good" not in r:
        return ["## `sensorcast fleet rollout`: not run (`--no-rollout`)", ""]
    good, bad = r["rollout_good"], r["rollout_bad"]
    return [
        f"## `sensorcast fleet rollout` over {r['devices']:,} devices",
        "",
        "A child process, signed with Ed25519, the bundle inline in each request "
        f"({r['bundle_bytes']:,} B); simulated devices report every few seconds while a "
        "shadow runs. Wall s from start to the report, CPU s and peak RSS MB of the "
        "controller, its exit code, the requests the devices answered:",
        "",
        *table(
            ["rollout", "waves", "soak s", "wall s", "CPU s", "peak RSS MB", "exit", "answered"],
            [_rollout_row("all good", good), _rollout_row(f"{bad['bad']} worse", bad)],
        ),
        "",
        f"- all good: {good.get('summary')}",
        f"- {bad['bad']} worse: {bad.get('summary')}",
        "",
        "Where the time goes (the controller's log: when the first and the last device "
        "entered each step, seconds after the first entered any):",
        "",
        f"- all good: {_timeline(good)}",
        f"- {bad['bad']} worse: {_timeline(bad)}",
        "",
        f"Mosquitto's RSS at the end: {mb(r['broker_rss_end_mb'])} MB.",
        "",
    ]


def render(r: dict[str, Any]) -> str:
    """The markdown file."""
    lines = [*_head(r), *_status(r), *_default_queue(r), *_decision(r), *_rollouts(r)]
    return "\n".join(lines) + "\n"
