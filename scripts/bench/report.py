"""The report of a run: the table of medians, the spread over rounds, the notes, the
ratios against the goals and, with --json, the same as JSON."""
from __future__ import annotations

import json
import statistics
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

from .config import TABLE

if TYPE_CHECKING:
    from .harness import Bench

Medians = Dict[str, Dict[str, float]]        # key -> column -> median
Best = Dict[str, Tuple[float, str]]          # key -> (value, column) of the best peer


def medians(b: Bench) -> Medians:
    return {key: {c: statistics.median(v) for c, v in b.results[key].items() if v}
            for key, *_ in TABLE}


def fmt(key: str, v: Optional[float]) -> str:
    """A table cell."""
    if v is None:
        return "-"
    if key == "idle_threads":
        return "%.2f" % v
    if key == "idle_kib" or key == "large":
        return "%.1f" % v
    return "{:,.0f}".format(v)


def print_table(b: Bench, med: Medians, best: Best) -> None:
    """The table: a row per measured key, a column per library, then the best peer."""
    cols = [c.name for c in b.columns]
    header = ["row", "unit"] + cols + ["best peer"]
    lines = []
    for key, label, unit, _ in TABLE:
        if not any(c in med[key] for c in cols) and key not in b.errors:
            continue
        cells = [label, unit]
        for c in cols:
            if c in med[key]:
                cells.append(fmt(key, med[key][c]))
            elif c in b.errors.get(key, {}):
                cells.append("error")
            else:
                cells.append("n/a")
        cells.append(best[key][1] if key in best else "-")
        lines.append(cells)
    widths = [max(len(str(x[i])) for x in [header] + lines) for i in range(len(header))]
    print()
    for cells in [header, ["-" * w for w in widths]] + lines:
        print("  ".join(str(x).ljust(w) if j < 2 else str(x).rjust(w)
                        for j, (x, w) in enumerate(zip(cells, widths))))
    print()


def report(b: Bench) -> None:
    """Print the report (and write the JSON file if asked)."""
    med = medians(b)
    peers = [c.name for c in b.columns if c.peer]
    best: Best = {}
    for key, _, _, hib in TABLE:
        vals = [(med[key][p], p) for p in peers if p in med[key]]
        if vals:
            best[key] = max(vals) if hib else min(vals)
    print_table(b, med, best)
    spread = []
    for key, label, _, _ in TABLE:
        cells = []
        for c in b.columns:
            v = b.results[key].get(c.name)
            if v and len(v) > 1 and min(v) > 0 and key not in ("deflate_size_s2c", "deflate_size_c2s"):
                cells.append("%s %.2f" % (c.name, max(v) / min(v)))
        if cells:
            spread.append("  %-22s %s" % (label, ", ".join(cells)))
    if spread:
        print("spread over rounds (max/min):")
        print("\n".join(spread))
    print("medians of %d rounds; %s; %.0f s" % (b.args.rounds,
                                                "quick counts" if b.args.quick else "full counts",
                                                b.meta["seconds"]))
    print("counts: " + ", ".join("%s %d" % kv for kv in b.counts.items()))
    print("start: %s" % b.meta["uptime_start"])
    print("end:   %s" % b.meta["uptime_end"])
    print("tree:  %s" % b.meta["tree"])
    for c in b.columns:
        if c.lib == "simplews":
            print("%s: client ext %s, server ext %s" % (
                c.name, "?" if c.client_ext is None else c.client_ext,
                "?" if c.server_ext is None else c.server_ext))
    for c in b.columns:
        if c.no_deflate:
            print("note: %s: no deflate row (%s)" % (c.name, c.no_deflate))
        if c.client_only:
            print("note: %s: client only, runs against a websockets.sync server; no idle row" % c.name)
    for note in b.notes:
        print("note: " + note)
    for key, errs in b.errors.items():
        for c_name, e in errs.items():
            print("error: %s / %s: %s" % (key, c_name, e))

    rats = ratios(b, med, best)
    if rats:
        print()
        print("ratios and goals")
        for rname, rr in rats.items():
            for g in rr:
                print("  %-16s %-12s %-34s %-22s %s" % (rname, g["row"], g["what"], g["goal"],
                                                        g["status"]))
    if b.args.json:
        write_json(b, med, best, rats)


def write_json(b: Bench, med: Medians, best: Best, rats: Dict[str, List[Dict[str, Any]]]) -> None:
    out = {
        "meta": b.meta,
        "columns": {c.name: {"lib": c.lib, "server": c.server, "version": c.version,
                             "peer": c.peer, "client_ext": c.client_ext, "server_ext": c.server_ext}
                    for c in b.columns},
        "units": {key: unit for key, _, unit, _ in TABLE},
        "values": b.results,
        "values_by_round": b.by_round,
        "medians": med,
        "best_peer": {k: {"column": v[1], "value": v[0]} for k, v in best.items()},
        "ratios": rats,
        "errors": b.errors,
        "notes": b.notes,
    }
    with open(b.args.json, "w") as f:
        json.dump(out, f, indent=2)
    print("\nJSON written to %s" % b.args.json)


def ratios(b: Bench, med: Medians, best: Best) -> Dict[str, List[Dict[str, Any]]]:
    """For each simplews column: its ratios to the floor, the best peer and
    websockets, with the goal, PASS/MISS and the paired per-round ratio."""
    return {c.name: column_ratios(b, c.name, med, best) for c in b.columns if c.lib == "simplews"}


def column_ratios(b: Bench, name: str, med: Medians, best: Best) -> List[Dict[str, Any]]:
    """The goals' rows for one simplews column."""
    res: List[Dict[str, Any]] = []

    def ratio(key: str, ref: Optional[float]) -> Optional[float]:
        if name in med[key] and ref:
            return med[key][name] / ref
        return None

    def paired(key: str, refcol: Optional[str]) -> Optional[float]:
        """median over rounds of this round's simplews / this round's reference"""
        a = b.by_round[key].get(name, {})
        r = b.by_round[key].get(refcol, {}) if refcol else {}
        rs = [a[i] / r[i] for i in a if i in r and r[i]]
        return statistics.median(rs) if rs else None

    def add(row: str, what: str, val: Optional[float], goal: str, ok: Callable[[float], bool],
            pair: Optional[float] = None) -> None:
        if val is None:
            status = "n/a"
        elif goal == "(info)":
            status = "%.2f" % val
        else:
            status = "%.2f  %s" % (val, "PASS" if ok(val) else "MISS")
        if pair is not None:
            status += "   (paired per round: %.2f)" % pair
        res.append({"row": row, "what": what, "value": val, "goal": goal, "status": status,
                    "paired": pair})

    def info(row: str, what: str, val: Optional[float]) -> None:
        add(row, what, val, "(info)", lambda v: True)

    def floor(key: str) -> Optional[float]:
        return med[key].get("floor")

    def ws(key: str) -> Optional[float]:
        return med[key].get("websockets")

    def bp(key: str) -> Optional[float]:
        return best[key][0] if key in best else None

    def bpc(key: str) -> Optional[str]:
        return best[key][1] if key in best else None

    add("rtt", "x floor", ratio("rtt", floor("rtt")), ">= 0.8", lambda v: v >= 0.8,
        paired("rtt", "floor"))
    info("rtt", "x best peer", ratio("rtt", bp("rtt")))
    add("pipeline", "x best peer", ratio("pipeline", bp("pipeline")), ">= 1.3", lambda v: v >= 1.3,
        paired("pipeline", bpc("pipeline")))
    info("pipeline", "x floor", ratio("pipeline", floor("pipeline")))
    add("large", "x best peer", ratio("large", bp("large")), ">= 1.2", lambda v: v >= 1.2,
        paired("large", bpc("large")))
    info("large", "x floor", ratio("large", floor("large")))
    add("deflate", "x websockets", ratio("deflate", ws("deflate")), ">= 1.3", lambda v: v >= 1.3,
        paired("deflate", "websockets"))
    info("deflate", "x floor", ratio("deflate", floor("deflate")))
    add("deflate", "size srv->cli / websockets", ratio("deflate_size_s2c", ws("deflate_size_s2c")),
        "<= 1.10", lambda v: v <= 1.10)
    add("deflate", "size cli->srv / websockets", ratio("deflate_size_c2s", ws("deflate_size_c2s")),
        "<= 1.10", lambda v: v <= 1.10)
    add("handshakes", "x best peer", ratio("handshakes", bp("handshakes")), ">= 2.0", lambda v: v >= 2.0,
        paired("handshakes", bpc("handshakes")))
    info("handshakes", "x floor", ratio("handshakes", floor("handshakes")))
    add("idle", "KiB per conn", med["idle_kib"].get(name), "<= 30", lambda v: v <= 30)
    add("idle", "threads per conn", med["idle_threads"].get(name), "== 1 (+1 keepalive/proc)",
        lambda v: abs(v - 1) <= 1.0 / b.counts["idle"] + 1e-9)
    return res
