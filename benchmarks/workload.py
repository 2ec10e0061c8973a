"""Generated sessions for the benchmark: 1-6 services of a realistic code mix, seeded."""
from __future__ import annotations

import random

TIMED = ["97110", "97112", "97116", "97140", "97530", "97535", "97035", "97113"]
OTHER = ["97161", "97162", "97165", "97150", "92507", "97129", "97130", "97010"]


def make_sessions(n: int, seed: int = 1, payer: str = "medicare") -> list:
    rnd = random.Random(seed)
    out = []
    for k in range(n):
        services, size = [], None
        for _ in range(rnd.randint(1, 6)):
            code = rnd.choice(TIMED) if rnd.random() < 0.75 else rnd.choice(OTHER)
            service = {"code": code, "minutes": rnd.randint(0, 60)}
            if code == "97150":
                # one group per session: entries of a code that disagree on group_size are an error
                drawn = rnd.randint(2, 6)
                service["group_size"] = size = size or drawn
            services.append(service)
        out.append({"session_id": f"S{k}", "payer": payer, "date_of_service": "2026-03-02",
                    "discipline": rnd.choice(["PT", "OT", "SLP"]), "services": services})
    return out
