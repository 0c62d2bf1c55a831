"""Per-element cost of PSI v2 (ristretto255) against dh-psi-v1 (2048-bit MODP), one run.

v2 blinding  = HashToGroup (RFC 9497) + one scalar multiplication (requester, per contact)
v2 reply     = one scalar multiplication + HKDF tag/key + wrap (responder, per element)
v1 blinding  = pow(H(x), a, p) with the RFC 3526 group-14 prime (wire-v1.md §5)
v1 reply     = pow(x, b, p)

Prints JSON: microseconds per element and the v1/v2 ratios (target >= 100x).
Usage: python bench/psi.py [--elements N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import secrets
import time
from collections.abc import Callable

from darkmesh_warm_intro import psi
from darkmesh_warm_intro.v1.psi import P
from darkmesh_warm_intro.v2 import exchange


def per_element(run: Callable[[], object], count: int) -> float:
    """Best of three runs, microseconds per element."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=256)
    args = parser.parse_args()
    n = args.elements
    emails = [f"person{i}@example{i % 17}.com" for i in range(n)]

    contacts = [(e, 0.5) for e in emails]
    v2_blind = per_element(lambda: exchange.blind_contacts(contacts, limit=psi.MAX_ELEMENTS), n)
    blinded = exchange.blind_contacts(contacts, limit=psi.MAX_ELEMENTS)
    elements = psi.decode_elements(blinded.elements)[:n]
    context = exchange.binding("bench", "node_a", "node_b")
    v2_reply = per_element(lambda: exchange.build_reply(
        elements=elements, own_identifiers=["casey@connector.com"], payload={"match": False},
        context=context), n)
    v2_validate = per_element(lambda: psi.decode_elements(b"".join(elements)), n)

    # dh-psi-v1: secrets are 2k with k uniform below (p-1)/2 (wire-v1.md §10.1 item 11).
    a = 2 * (secrets.randbelow((P - 1) // 2 - 2) + 1)
    b = 2 * (secrets.randbelow((P - 1) // 2 - 2) + 1)
    hashes = [int.from_bytes(hashlib.sha256(e.encode()).digest(), "big") for e in emails]
    v1_count = max(16, n // 8)  # MODP is slow: a smaller sample keeps the run short
    v1_blind = per_element(lambda: [pow(h, a, P) for h in hashes[:v1_count]], v1_count)
    xs = [pow(h, a, P) for h in hashes[:v1_count]]
    v1_reply = per_element(lambda: [pow(x, b, P) for x in xs], v1_count)

    print(json.dumps({
        "elements": n,
        "us_per_element": {"v2_blind": round(v2_blind, 1), "v2_reply": round(v2_reply, 1),
                           "v2_validate": round(v2_validate, 1),
                           "v1_blind": round(v1_blind, 1), "v1_reply": round(v1_reply, 1)},
        "ratio_v1_over_v2": {"blind": round(v1_blind / v2_blind, 1),
                             "reply": round(v1_reply / v2_reply, 1)},
        "target_ratio": 100,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count()},
    }, indent=2))


if __name__ == "__main__":
    main()
