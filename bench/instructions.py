"""The drop-in's cost counted in CPU instructions, which do not drift as timings do. Needs valgrind.

``python bench/instructions.py`` (about two minutes): the fake Twilio of ``decide.py`` runs in
another process; four runs of one sending process under ``valgrind --tool=callgrind`` count the
instructions of a warm-up alone and of a warm-up plus ``--sends`` sends, bare and through
``GatedClient``, with ``PYTHONHASHSEED=0``. The difference over the sends is the cost per send;
it prints both and the gated/bare ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from decide import FROM, TO, client_for, serve

from gatekeeper import GatedClient, Gatekeeper

VALGRIND = shutil.which("valgrind")


def send(url: str, mode: str, sends: int) -> None:
    """The measured process: a warm-up of 20 sends, then ``sends`` more (bare or gated)."""
    bare = client_for(url)
    target: Any = GatedClient(bare, Gatekeeper(bare)) if mode == "gated" else bare
    for _ in range(20 + sends):
        target.messages.create(to=TO, from_=FROM, body="Your package arrives today")


def counted(url: str, mode: str, sends: int) -> int:
    """Instructions of one sending process under callgrind."""
    assert VALGRIND is not None
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(  # noqa: S603 - our own fixed command line
            [
                VALGRIND, "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out",
                sys.executable, __file__, "--child", url, mode, str(sends),
            ],
            capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sends", type=int, default=1000)
    parser.add_argument("--child", nargs=3, metavar=("URL", "MODE", "SENDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        url, mode, sends = args.child
        send(url, mode, int(sends))
        return
    if VALGRIND is None:
        sys.exit("valgrind is not on PATH: this bench counts instructions with it")
    ctx = multiprocessing.get_context("spawn")
    ready: Any = ctx.Queue()
    server = ctx.Process(target=serve, args=(ready,), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{ready.get(timeout=30)}"
        runs = [(mode, n) for mode in ("bare", "gated") for n in (0, args.sends)]
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(zip(runs, pool.map(lambda run: counted(url, *run), runs), strict=True))
    finally:
        server.terminate()
    per = {mode: (counts[(mode, args.sends)] - counts[(mode, 0)]) / args.sends for mode in ("bare", "gated")}
    print(
        f"instructions per messages.create, repeated number, {args.sends} sends after a warm-up: bare "
        f"{per['bare']:,.0f}, gated {per['gated']:,.0f}; the gate {per['gated'] - per['bare']:,.0f} "
        f"(gated/bare {per['gated'] / per['bare']:.4f}, {100 * (per['gated'] / per['bare'] - 1):+.2f} %)"
    )


if __name__ == "__main__":
    main()
