"""``python -m gatekeeper``: the command line, exactly as the ``gatekeeper`` script runs it."""

from gatekeeper.cli import main

if __name__ == "__main__":  # imported (not run) by tools that walk the package: do nothing then
    raise SystemExit(main())
