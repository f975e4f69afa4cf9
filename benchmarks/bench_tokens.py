"""What signed decision ids and API keys cost, against baselines measured in the same run.

- signing: ``DecisionSigner.sign`` for 1 and 1000 decisions, against formatting the unsigned
  ids the service issued before (``f"d{prefix}{counter:x}"``, the floor of any id scheme);
- verifying: ``DecisionSigner.verify`` of 1000 ids, against ``parse_event`` of the same 1000
  events (the per-event checking every reward goes through anyway);
- API keys: ``KeyRing.authenticate`` with 10 keys configured, against one dict lookup of the
  header (what an unhashed, non-constant-time check would cost).

Usage: python -m benchmarks.bench_tokens
"""

from __future__ import annotations

import secrets

import numpy as np

from bandit.api.auth import KeyRing, key_line, new_key
from bandit.inputs import parse_event
from bandit.tokens import DecisionSigner, warm_up
from benchmarks.bench_kernels import median_ns

NOW = 1_800_000_000


def main() -> None:
    warm_up()
    signer = DecisionSigner(secrets.token_bytes(32), secrets.randbits(40))
    arms = np.random.default_rng(0).integers(0, 10, 1000)
    prefix = secrets.token_hex(5)
    rows: list[tuple[str, float, float]] = []

    signed_one = median_ns(lambda: signer.sign_one("bench", "d", NOW, 3), repeats=31, inner=645)
    plain_one = median_ns(lambda: [f"d{prefix}{12345:x}"], repeats=31, inner=645)
    rows.append(("sign 1 decision", signed_one, plain_one))
    signed = median_ns(lambda: signer.sign("bench", "d", NOW, arms), repeats=31, inner=9)
    plain = median_ns(lambda: [f"d{prefix}{c:x}" for c in range(12345, 13345)], repeats=31, inner=9)
    rows.append(("sign 1000 decisions", signed, plain))

    ids = signer.sign("bench", "d", NOW, arms)
    arm_list = arms.tolist()
    events = [{"id": f"event-{i}", "experiment": "bench", "arm": f"arm{a}", "reward": 1,
               "decision_id": decision_id}
              for i, (a, decision_id) in enumerate(zip(arm_list, ids, strict=True))]
    verified = median_ns(lambda: signer.verify("bench", ids, arm_list, NOW, 3600),
                         repeats=31, inner=9)
    parsed = median_ns(lambda: [parse_event(i, e, set()) for i, e in enumerate(events)],
                       repeats=31, inner=9)
    rows.append(("verify 1000 decision ids", verified, parsed))

    keys = [new_key() for _ in range(10)]
    ring = KeyRing.parse("\n".join(key_line(f"key{i}", ["decide"], key)
                                   for i, key in enumerate(keys)), "bench")
    header = f"Bearer {keys[7]}"
    table = {header: "key7"}
    checked = median_ns(lambda: ring.authenticate(header), repeats=31, inner=1612)
    looked_up = median_ns(lambda: table.get(header), repeats=31, inner=1612)
    rows.append(("authenticate (10 keys)", checked, looked_up))

    print(f"{'operation':28} {'time':>12} {'baseline':>12} {'ratio':>8}  baseline is")
    baselines = ["unsigned id f-string", "1000 unsigned f-strings", "parse_event x 1000",
                 "dict lookup"]
    for (name, value, base), what in zip(rows, baselines, strict=True):
        print(f"{name:28} {value / 1e3:10.2f}us {base / 1e3:10.2f}us {value / base:7.2f}x  "
              f"{what}")


if __name__ == "__main__":
    main()
