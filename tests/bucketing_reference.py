"""Reference allocations for the bucketing tests, written from the documented formulas
(hashlib and zlib directly, not keel's code), and units of each id shape."""

import hashlib
import random
import uuid
import zlib

_rng = random.Random(2027)
UNITS: list[object] = (
    list(range(1, 1001))  # integer ids (str(42) == "42" is what is hashed)
    + [str(uuid.UUID(int=_rng.getrandbits(128), version=4)) for _ in range(1000)]
    + [f"user{_rng.randrange(10**6)}@example{_rng.randrange(9)}.com" for _ in range(1000)]
)


def crc32_reference(name: str, salt: str, unit: object) -> int:
    """How keel bucketed before schemes were recorded (the formula its docs gave)."""
    return zlib.crc32(f"{name}.{salt}.{unit}".encode()) % 10_000


def blake2b_reference(name: str, salt: str, unit: object) -> int:
    """The documented new scheme, written from its description."""
    s = salt.encode()
    data = name.encode() + b"\0" + str(len(s)).encode() + b"\0" + s + str(unit).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") % 10_000
