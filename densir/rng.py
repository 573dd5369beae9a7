"""Seeds that do not depend on the process: Python's ``hash()`` of a str is salted per process, so
every seeded choice in densir (train-group sampling, epoch shuffles, negatives per query) derives
its seed from a SHA-256 of its parts."""
from __future__ import annotations

import hashlib
import random


def stable_seed(*parts) -> int:
    """A stable 64-bit seed from any parts."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big")


def seeded_rng(*parts) -> random.Random:
    """A ``random.Random`` seeded by :func:`stable_seed` of the parts."""
    return random.Random(stable_seed(*parts))
