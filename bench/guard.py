"""What the guard's shipped rules do to SMS pumping and to real users: ``python bench/guard.py`` (in ``./run bench``).

Runs, against the in-process sandbox on a fake clock, the two traces of ``tests/guard_traces.py`` (fixed seeds):
an attack (sequential numbers in one block, 50 OTP requests a second, a new client key each, none completed) and
a legitimate trace of the same length (random mobiles across 10 countries). Prints, for enforce and observe mode,
the attempt the attack was first blocked at (target: within 30) and the legitimate trace's false-block rate
(target: <= 1 %), 80 % of its codes entered. Then conversion-aware limits (``[guard.conversion]``): the attack
paced to one code a minute for two hours (within the prefix rule), codes sent with the velocity rules alone
against with conversion-aware limits, and two hours of real users' false-block rate with them on.
``tests/test_guard.py`` and ``tests/test_conversion.py`` assert the same figures on the same seeds (shorter traces).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from guard_traces import Result, attack, legitimate, paced_attack, run
from support import FakeClock

from gatekeeper import Gatekeeper, Settings, Stores
from gatekeeper.sandbox import SandboxServer
from gatekeeper.stores.memory import MemoryStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=1000, help="attempts in each trace")
    args = parser.parse_args()
    logging.getLogger("gatekeeper.guard").setLevel(logging.ERROR)  # the tightening's warnings, once per 2 minutes
    with SandboxServer() as server:

        def play(trace: list[Any], **guard: Any) -> Result:
            server.sandbox.reset()
            clock = FakeClock()
            gate = Gatekeeper(server.client(), settings=Settings(guard=guard), clock=clock,
                              stores=Stores.using(MemoryStore(clock=clock)))  # fmt: skip
            start = clock()
            codes = server.sandbox.verification_code
            return run(gate, trace, lambda offset, c=clock, s=start: setattr(c, "now", s + offset), codes)

        for mode in ("enforce", "observe"):
            hit, legit = play(attack(args.length), mode=mode), play(legitimate(args.length), mode=mode)
            first = "never" if hit.first_blocked is None else f"at attempt {hit.first_blocked}"
            ok = (hit.first_blocked or 10**9) <= 30 if mode == "enforce" else hit.observed > 0
            print(f"guard, {mode}: attack of {hit.attempts}: blocked {first}, {hit.blocked} blocked, "
                  f"{hit.observed} recorded as observed ({'OK' if ok else 'MISSED'}); legitimate {legit.attempts}: "
                  f"false blocks {100 * legit.block_rate:.2f} % (target <= 1 %) "
                  f"{'OK' if legit.block_rate <= 0.01 else 'MISSED'}")  # fmt: skip
        paced = paced_attack(hours=2)
        alone, tightened = play(paced, conversion={"enabled": False}), play(paced)
        users = play(legitimate(720, every_seconds=10))
        print(f"guard, conversion-aware: an attack paced to 1 code/min for 2 h, none entered: {alone.sent} codes sent "
              f"with the velocity rules alone, {tightened.sent} with conversion-aware limits "
              f"({tightened.sent / alone.sent:.2f}x); 2 h of real users ({users.attempts}, 80 % entering their code): "
              f"false blocks {100 * users.block_rate:.2f} % "
              f"{'OK' if users.block_rate <= 0.01 else 'MISSED'}")  # fmt: skip

if __name__ == "__main__":
    main()
