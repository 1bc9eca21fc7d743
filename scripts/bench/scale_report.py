"""The scale section of the report (a line per switch interval, N and column) and
the goals of the scale and idle-cpu rows."""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

if TYPE_CHECKING:
    from .harness import Bench

Medians = Dict[str, Dict[str, float]]


def print_scale(b: Bench, med: Medians) -> None:
    """The scale cells: msg/s, p50, p99, the load client's CPU and the ratio to the floor."""
    s = b.scale
    keys = ["scale:%d:%s" % (n, sw) for sw in ("d", "r") for n in s["n"]]
    if not any(med.get(k) or b.errors.get(k) for k in keys):
        return
    print("scale: closed-loop echo of 32-byte text messages, %g s per cell, N connections; one load "
          "client (%d processes); servers with their defaults; medians of %d round(s)" % (
              s["seconds"], s["clients"], s["rounds"]))
    print("  %-9s %6s  %-18s %10s %9s %9s %11s %8s" % (
        "switch", "N", "column", "msg/s", "p50 ms", "p99 ms", "client CPU", "x floor"))
    for key in keys:
        _, n, sw = key.split(":")
        switch = "default" if sw == "d" else "%g s" % s["switch_interval"]
        floor = med[key].get("floor")
        for c in b.columns:
            if c.client_only:
                continue
            v = med[key].get(c.name)
            if v is None:
                err = b.errors.get(key, {}).get(c.name)
                cells = "%10s  %s" % ("error" if err else "n/a", (err or "")[:70])
            else:
                cells = "%10s %9.1f %9.1f %9.0f %% %8s" % (
                    "{:,.0f}".format(v), med[key + ":p50"].get(c.name, 0), med[key + ":p99"].get(c.name, 0),
                    med[key + ":cli"].get(c.name, 0), "%.2f" % (v / floor) if floor else "-")
            print("  %-9s %6s  %-18s %s" % (switch, n, c.name, cells))
    print()


def paired(b: Bench, key: str, name: str, refcol: Optional[str],
           refkey: Optional[str] = None) -> Optional[float]:
    """The median over rounds of this round's value / this round's reference: column
    ``refcol`` (default: this one) in row ``refkey`` (default: this one)."""
    a = b.by_round.get(key, {}).get(name, {})
    r = b.by_round.get(refkey or key, {}).get(refcol or name, {})
    rs = [a[i] / r[i] for i in a if i in r and r[i]]
    return statistics.median(rs) if rs else None


def goal(row: str, what: str, val: Optional[float], target: str, ok: Callable[[float], bool],
         pair: Optional[float] = None) -> Dict[str, Any]:
    """One line of the goals: its value, PASS/MISS (or the value alone for "(info)")."""
    if val is None:
        status = "n/a"
    elif target == "(info)":
        status = "%.2f" % val
    else:
        status = "%.2f  %s" % (val, "PASS" if ok(val) else "MISS")
    if pair is not None:
        status += "   (paired per round: %.2f)" % pair
    return {"row": row, "what": what, "value": val, "goal": target, "status": status, "paired": pair}


def at_least(lim: float) -> Callable[[float], bool]:
    return lambda v: v >= lim


def scale_goals(b: Bench, name: str, med: Medians) -> List[Dict[str, Any]]:
    """Issue 14's goals: with the switch interval raised for both, >= 0.85x the floor at
    every N; with the defaults, >= the floor; idle-cpu < 1 % of a core, <= 20 KiB/conn."""
    res = []
    for n in b.scale["n"]:
        for sw, target, lim in (("r", ">= 0.85", 0.85), ("d", ">= 1.0", 1.0)):
            key = "scale:%d:%s" % (n, sw)
            floor = med.get(key, {}).get("floor")
            v = med.get(key, {}).get(name)
            label = "scale %d %s" % (n, "si=%g" % b.scale["switch_interval"] if sw == "r" else "default")
            res.append(goal(label, "x floor", v / floor if v is not None and floor else None, target,
                            at_least(lim), paired(b, key, name, "floor")))
    res.append(goal("idle-cpu", "%% core, %d conns" % b.scale["idle_n"], med["idle_cpu"].get(name),
                    "< 1", lambda v: v < 1))
    pinging = med.get("idle_cpu_pinging", {}).get("floor")
    value = med["idle_cpu"].get(name)
    res.append(goal("idle-cpu", "x the floor pinging as often", value / pinging if value is not None
                    and pinging else None, "(info)", lambda v: True))
    res.append(goal("idle-cpu", "KiB per conn", med["idle_cpu_kib"].get(name), "<= 20", lambda v: v <= 20))
    return res
