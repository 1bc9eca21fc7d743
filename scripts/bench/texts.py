"""The deflate row's messages: JSON-like texts of one shape with different values."""
from __future__ import annotations

import json
import random
from typing import List, Optional

DEFLATE_TARGET = 17920                           # 17.5 KiB of JSON-like text
DEFLATE_VARIANTS = 16                            # distinct texts, cycled


def make_texts(n: int = DEFLATE_VARIANTS, target: int = DEFLATE_TARGET) -> List[str]:
    """Deterministic JSON-like texts of ~17.5 KiB with the same structure and
    different values (so context takeover cannot just reference the previous
    identical message)."""
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
             "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon", "phi",
             "chi", "psi", "omega", "red", "green", "blue", "amber", "violet", "north", "south",
             "east", "west", "admin", "user", "guest", "pending", "active", "archived"]
    out = []
    for v in range(n):
        rnd = random.Random(1000 + v)
        recs = []
        i = 0
        while True:
            rec = {
                "id": 100000 + rnd.randrange(900000),
                "name": "%s %s" % (rnd.choice(words).title(), rnd.choice(words).title()),
                "email": "%s.%s%d@example.com" % (rnd.choice(words), rnd.choice(words), rnd.randrange(100)),
                "role": rnd.choice(words[-6:]),
                "score": round(rnd.random() * 100, 3),
                "active": rnd.random() < 0.5,
                "tags": rnd.sample(words, 3),
                "created": "2024-%02d-%02dT%02d:%02d:%02dZ" % (
                    rnd.randrange(1, 13), rnd.randrange(1, 29), rnd.randrange(24),
                    rnd.randrange(60), rnd.randrange(60)),
                "geo": {"lat": round(rnd.uniform(-90, 90), 5), "lon": round(rnd.uniform(-180, 180), 5)},
            }
            recs.append(rec)
            i += 1
            s = json.dumps({"page": v, "items": recs}, separators=(", ", ": "))
            if len(s) >= target:
                break
        recs.pop()
        s = json.dumps({"page": v, "items": recs}, separators=(", ", ": "))
        pad = target - len(s) - len(', "pad": ""')
        s = s[:-1] + ', "pad": "%s"}' % ("x" * max(pad, 0))
        out.append(s)
    return out


_texts: Optional[List[str]] = None


def texts() -> List[str]:
    """make_texts(), made once per process."""
    global _texts
    if _texts is None:
        _texts = make_texts()
    return _texts
