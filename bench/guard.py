"""What the guard's shipped rules do to SMS pumping and to real users: ``python bench/guard.py`` (in ``./run bench``).

Runs, against the in-process sandbox on a fake clock, the two traces of ``tests/guard_traces.py`` (fixed seeds):
an attack (sequential numbers in one block, 50 OTP requests a second, a new client key each, none completed) and
a legitimate trace of the same length (random mobiles across 10 countries). Prints, for enforce and observe mode,
the attempt the attack was first blocked at (target: within 30) and the legitimate trace's false-block rate
(target: <= 1 %). ``tests/test_guard.py`` asserts the same figures on the same seeds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from guard_traces import attack, legitimate, run
from support import FakeClock

from gatekeeper import Gatekeeper, Settings, Stores
from gatekeeper.sandbox import SandboxServer
from gatekeeper.stores.memory import MemoryStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=1000, help="attempts in each trace")
    args = parser.parse_args()
    with SandboxServer() as server:
        for mode in ("enforce", "observe"):
            results = {}
            for name, trace in (("attack", attack(args.length)), ("legitimate", legitimate(args.length))):
                server.sandbox.reset()
                clock = FakeClock()
                gate = Gatekeeper(server.client(), settings=Settings(guard={"mode": mode}), clock=clock,
                                  stores=Stores.using(MemoryStore(clock=clock)))  # fmt: skip
                start = clock()
                results[name] = run(gate, trace, lambda offset, c=clock, s=start: setattr(c, "now", s + offset))
            hit, legit = results["attack"], results["legitimate"]
            first = "never" if hit.first_blocked is None else f"at attempt {hit.first_blocked}"
            ok = (hit.first_blocked or 10**9) <= 30 if mode == "enforce" else hit.observed > 0
            print(f"guard, {mode}: attack of {hit.attempts}: blocked {first}, {hit.blocked} blocked, "
                  f"{hit.observed} recorded as observed ({'OK' if ok else 'MISSED'}); legitimate {legit.attempts}: "
                  f"false blocks {100 * legit.block_rate:.2f} % (target <= 1 %) "
                  f"{'OK' if legit.block_rate <= 0.01 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
