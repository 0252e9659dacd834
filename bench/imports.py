"""What starting Gatekeeper costs: ``python bench/imports.py [--runs 21]``.

Prints, from one run, the median wall time of N fresh processes for each of:
  * ``python -c pass``                         the interpreter alone, for reference;
  * ``python -c "import twilio.rest"``         the baseline: what any twilio program pays;
  * ``python -c "import gatekeeper"``          the package itself (its public names load on first use);
  * ``gatekeeper --help``                      the console script (target: <= 2x the baseline);
  * ``python -c "from gatekeeper import Gatekeeper"``  the whole gate, for the record;
and each against the baseline. The runs of the commands are interleaved, after one warm-up each, so a machine
getting slower or faster during the run moves them all alike. A benchmark, not a test: the tests check which
modules load (``tests/test_imports.py``), which does not drift.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 2.0  # gatekeeper --help may take at most this many times `import twilio.rest`


def commands() -> dict[str, list[str]]:
    py = sys.executable
    script = Path(py).with_name("gatekeeper")
    gatekeeper = str(script) if script.exists() else shutil.which("gatekeeper")
    if gatekeeper is None:
        sys.exit("no gatekeeper script beside this Python or on PATH: install the package (./run does)")
    return {
        "python -c pass": [py, "-c", "pass"],
        "import twilio.rest": [py, "-c", "import twilio.rest"],
        "import gatekeeper": [py, "-c", "import gatekeeper"],
        "gatekeeper --help": [gatekeeper, "--help"],
        "from gatekeeper import Gatekeeper": [py, "-c", "from gatekeeper import Gatekeeper"],
    }


def wall(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)  # noqa: S603 - this Python, fixed arguments
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="processes per command (default 21)")
    args = parser.parse_args()
    todo = commands()
    for argv in todo.values():  # warm-up: bytecode caches written, files in the page cache
        wall(argv)
    times: dict[str, list[float]] = {name: [] for name in todo}
    for _ in range(args.runs):
        for name, argv in todo.items():
            times[name].append(wall(argv))
    median = {name: statistics.median(t) for name, t in times.items()}
    base = median["import twilio.rest"]
    print(f"Python {sys.version.split()[0]} ({sys.executable}); median of {args.runs} runs each")
    print(f"{'command':<36} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'x twilio.rest':>14}")
    for name, t in times.items():
        ms = f"{median[name] * 1e3:>10.1f} {min(t) * 1e3:>8.1f} {max(t) * 1e3:>8.1f}"
        print(f"{name:<36} {ms} {median[name] / base:>14.2f}")
    ratio = median["gatekeeper --help"] / base
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"gatekeeper --help / import twilio.rest = {ratio:.2f} ({verdict} the target of {TARGET:.0f}x)")
    print(f"import gatekeeper / import twilio.rest = {median['import gatekeeper'] / base:.2f}")


if __name__ == "__main__":
    main()
