"""Outcome: a mode's results (reports/<mode>/index.json), its verdict and its summary text."""
from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from typing import Any, Iterable, Optional

from .config import AGENT, BEHAVIORS, CLOSE_BEHAVIORS, INFORMATIONAL_CASES, ROOT

Results = dict[str, dict[str, Any]]  # case id -> the index entry, with the case's report as "detail"


class Outcome:
    """What running a mode leaves behind; Mode (mode.py) fills it in."""

    def __init__(self, name: str, tls: bool, cases: list[str], outdir: str) -> None:
        self.name = name
        self.tls = tls
        self.cases = cases
        self.outdir = outdir
        self.wall = 0.0
        self.error: Optional[str] = None
        self.result: Optional[Results] = None

    @property
    def scheme(self) -> str:
        return "wss" if self.tls else "ws"

    def collect(self) -> Optional[Results]:
        """The suite's index.json for our agent, each case's own report under "detail"."""
        try:
            with open(os.path.join(self.outdir, "index.json")) as f:
                index = json.load(f)
        except (OSError, ValueError):
            return None
        results: Results = index.get(AGENT) or (next(iter(index.values())) if len(index) == 1 else {})
        for entry in results.values():
            entry["detail"] = {}
            path = os.path.join(self.outdir, entry["reportfile"])
            with contextlib.suppress(OSError, ValueError), open(path) as f:
                entry["detail"] = json.load(f)
        return results

    def bad_cases(self) -> list[str]:
        """Ids of the cases that ran and are not OK (the three informational ones aside)."""
        results = self.result or {}
        bad = []
        for case_id in sorted(results, key=case_key):
            r = results[case_id]
            ok = ("OK", "INFORMATIONAL") if case_id in INFORMATIONAL_CASES else ("OK",)
            if r["behavior"] not in ok or r["behaviorClose"] not in ok:
                bad.append(case_id)
        return bad

    def missing_cases(self) -> list[str]:
        """Ids of the selected cases the report does not have."""
        results = self.result or {}
        return [c for c in self.cases if c not in results]

    def passed(self) -> bool:
        return not self.error and not self.bad_cases() and not self.missing_cases()

    def summary(self) -> str:
        """The text printed after the run (and written to reports/<mode>/summary.txt)."""
        lines = [f"== {self.name}: {self.scheme}://, {len(self.cases)} cases, wall time {self.wall:.1f} s =="]
        if self.error:
            lines.append(f"HARNESS ERROR: {self.error}")
        results = self.result or {}
        if not results:
            lines.append("no results (no index.json)")
            return "\n".join(lines)
        lines.append("behavior:         " + tally((r["behavior"] for r in results.values()), BEHAVIORS))
        lines.append("closing behavior: " + tally((r["behaviorClose"] for r in results.values()),
                                                  CLOSE_BEHAVIORS))
        info = [c for c in sorted(results, key=case_key)
                if c in INFORMATIONAL_CASES and results[c]["behavior"] == "INFORMATIONAL"]
        if info:
            lines.append(f"accepted INFORMATIONAL: {', '.join(info)}")
        bad = self.bad_cases()
        if bad:
            lines.append(f"NOT OK ({len(bad)}): {', '.join(bad)}")
            lines += self.failure_groups(results, bad)
        else:
            lines.append("NOT OK: none")
        missing = self.missing_cases()
        if missing:
            lines.append(f"MISSING ({len(missing)}): {', '.join(missing[:30])}"
                         + (" ..." if len(missing) > 30 else ""))
        slow = sorted(results.items(), key=lambda kv: -kv[1]["duration"])[:10]
        lines.append("slowest: " + ", ".join(f"{c} {r['duration'] / 1000:.2f} s" for c, r in slow))
        total_ms = sum(r["duration"] for r in results.values())
        lines.append(f"sum of case durations {total_ms / 1000:.1f} s, wall time {self.wall:.1f} s")
        lines.append("RESULT: " + ("PASS" if self.passed() else "FAIL"))
        return "\n".join(lines)

    def failure_groups(self, results: Results, bad: list[str]) -> list[str]:
        """One paragraph per kind of failure: same behaviours, close code and verdict text."""
        groups: dict[tuple[Any, ...], list[str]] = {}
        for case_id in bad:
            r = results[case_id]
            d = r.get("detail", {})
            result = " ".join(str(d.get("result", "")).split())
            if result.startswith("Case did not finish within"):
                result = "Case did not finish within N seconds."
            key = (r["behavior"], r["behaviorClose"], r["remoteCloseCode"],
                   shorten(d.get("remoteCloseReason") or "", 200), shorten(result, 300),
                   shorten(d.get("resultClose", ""), 200))
            groups.setdefault(key, []).append(case_id)
        lines = []
        for (b, bc, code, reason, result, result_close), ids in groups.items():
            r = results[ids[0]]
            lines.append(f"  {len(ids)} case(s): {compact_ids(ids)}")
            lines.append(f"    behavior {b}, closing {bc}, simplews' close code {code}"
                         + (f" reason {reason!r}" if reason else ""))
            if result:
                lines.append(f"    result: {result}")
            if result_close:
                lines.append(f"    resultClose: {result_close}")
            lines.append("    e.g. " + os.path.relpath(
                os.path.join(self.outdir, r["reportfile"].replace(".json", ".html")), ROOT))
        return lines


def tally(values: Iterable[str], known: list[str]) -> str:
    """'OK 3, FAILED 0, ...': every known verdict in order, then any other seen."""
    counts = Counter(values)
    return ", ".join(f"{k} {counts.get(k, 0)}" for k in known + sorted(set(counts) - set(known)))


def case_key(case_id: str) -> tuple[int, ...]:
    """Sort key: 12.1.10 after 12.1.9."""
    return tuple(int(x) for x in case_id.split("."))


def compact_ids(ids: list[str], limit: int = 12) -> str:
    """'12.1.1, 12.1.2, ... (90 cases, last 12.1.90)' for long lists."""
    if len(ids) <= limit:
        return ", ".join(ids)
    return ", ".join(ids[:limit]) + f", ... ({len(ids)} cases, last {ids[-1]})"


def shorten(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 4] + " ..."
