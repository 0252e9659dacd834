"""``gatekeeper``: the command line. Argument parsing only; the work lives in gate, batch and demo.

Every command reads the same settings (``--config`` or ``GATEKEEPER_CONFIG``, then the
environment), masks phone numbers in its logs, and turns an error into one line on stderr
with a non-zero exit status.

Parsing needs only the standard library: each command imports what it uses when it runs, so ``gatekeeper
--help`` and ``--version`` start in a fraction of the time ``import twilio.rest`` takes (``bench/imports.py``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gatekeeper.models import Decision
    from gatekeeper.settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_REFUSED = 0, 1, 3  # argparse itself exits 2 on a usage error
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process ended by SIGINT
log = logging.getLogger("gatekeeper.cli")


def _setup_logging(verbose: int) -> None:
    from gatekeeper.phone import MaskNumbers

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(MaskNumbers())  # a safety net under every log line, whoever logged it
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG)


def _settings(args: argparse.Namespace) -> Settings:
    from gatekeeper.settings import Settings

    return Settings.load(args.config)


@contextmanager
def _gate(args: argparse.Namespace) -> Iterator[Any]:
    """A Gatekeeper from the settings, or against an in-process sandbox with ``--sandbox``."""
    from gatekeeper.gate import Gatekeeper
    from gatekeeper.wiring import in_process_sandbox

    settings = _settings(args)
    with ExitStack() as stack:
        client = None
        if getattr(args, "sandbox", False):
            client = stack.enter_context(in_process_sandbox(settings)).client()
        gate = Gatekeeper.from_settings(settings, twilio_client=client)
        stack.callback(gate.close)
        yield gate


# -- commands ---------------------------------------------------------------------------
def cmd_demo(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gatekeeper import demo

    return EXIT_OK if demo.run(Console()) else EXIT_ERROR


def cmd_check(args: argparse.Namespace) -> int:
    from pydantic import TypeAdapter

    from gatekeeper.models import Decision

    with _gate(args) as gate:
        looking = gate.derive(guarded=False)  # a look is no attempt: it counts in no window
        decision: Decision = looking.decide(
            args.number, purpose=args.purpose, country=args.country, last_verified=args.last_verified
        )
        guard = gate.guard_report(args.number, args.purpose, country=args.country, client_key=args.client_key)
    if args.json:
        sys.stdout.write(TypeAdapter(Decision).dump_json(decision, indent=2).decode() + "\n")
    else:
        _print_decision(decision, guard)
    return EXIT_REFUSED if decision.refused and decision.enforced else EXIT_OK


def _print_decision(decision: Decision, guard: Sequence[str] = ()) -> None:
    from rich.console import Console
    from rich.table import Table

    from gatekeeper.phone import mask

    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("number", mask(decision.to) if decision.to.startswith("+") else "(not a number)")
    table.add_row("purpose", decision.purpose)
    table.add_row("action", decision.action.value)
    if decision.twilio_code:
        table.add_row("twilio code", str(decision.twilio_code))
    table.add_row("reasons", ", ".join(decision.reasons) or "-")
    table.add_row("enforced", "yes" if decision.enforced else "no (observe mode)")
    if decision.facts is not None:
        f = decision.facts
        shown = ("country_code", "line_type", "carrier_name", "mcc", "mnc", "caller_name", "sms_pumping_risk_score",
                 "sms_pumping_blocked", "sim_swapped", "line_status", "reassigned", "source")  # fmt: skip
        for name in shown:
            value = getattr(f, name)
            if value is not None:
                table.add_row(name.replace("_", " "), str(value))
    for i, rule in enumerate(guard):  # the velocity rules an attempt would count in, and past which limit
        table.add_row("guard" if i == 0 else "", rule)
    Console().print(table)


def cmd_replay(args: argparse.Namespace) -> int:
    import time

    from gatekeeper.replay import replay
    from gatekeeper.settings import Settings
    from gatekeeper.velocity import parse_duration
    from gatekeeper.wiring import build_stores

    proposed = Settings.load(args.policy)
    since = time.time() - parse_duration(args.since) if args.since else None
    stores = build_stores(_settings(args))  # the audit is read; no Twilio call, no credentials needed
    try:
        records = stores.audit.recent(args.limit)
    finally:
        for close in stores.closers:
            close()
    for line in replay(records, proposed, since=since).lines():
        sys.stdout.write(line + "\n")
    return EXIT_OK


def cmd_enrich(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from gatekeeper.batch import EnrichSummary, ProgressEvent, enrich_file

    fields = tuple(f.strip() for f in args.fields.split(",") if f.strip()) if args.fields else None
    progress = Progress(
        TextColumn("[bold]enrich"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=Console(stderr=True),
    )
    task = progress.add_task("enrich", total=None, detail="")
    last: list[ProgressEvent] = []

    def on_progress(event: ProgressEvent) -> None:
        progress.start()  # on the first row, so input errors print alone, without an empty bar
        s = event.so_far
        detail = f"looked up {s.looked_up}, cached {s.cached}, refused {s.refused}, errors {s.errors}"
        progress.update(task, completed=s.rows, total=event.total, detail=detail)
        last[:] = [event]

    summary: EnrichSummary | None = None
    with _gate(args) as gate:
        try:
            summary = enrich_file(
                gate,
                args.input,
                args.output,
                rate_per_second=args.rate,
                concurrency=args.concurrency,
                fields=fields,
                purpose=args.purpose,
                country=args.country,
                progress=on_progress,
            )
        except KeyboardInterrupt:
            pass  # Ctrl-C: enrich_file wrote the rows whose Lookups were in flight before raising
        finally:
            if progress.live.is_started:
                progress.stop()
    if summary is None:
        done = f"{last[0].so_far.rows} of {last[0].total} rows" if last else "no rows"
        sys.stderr.write(
            f"gatekeeper: interrupted with {done} done, the Lookups in flight included, in {args.output}; "
            "run the same command again to resume\n"
        )
        return EXIT_INTERRUPTED
    sys.stdout.write(
        f"rows {summary.rows}  looked up {summary.looked_up}  cached {summary.cached}  refused {summary.refused}  "
        f"errors {summary.errors}  skipped (already done) {summary.skipped}  "
        f"achieved {summary.achieved_rate:.1f} lookups/s in {summary.elapsed_seconds:.1f} s\n"
    )
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import waitress

    from gatekeeper.gate import Gatekeeper
    from gatekeeper.webhooks import webhook_urls
    from gatekeeper.webhooks.wsgi import create_app, metrics_note, serve_metrics

    settings = _settings(args)
    if args.public_url:
        webhooks = settings.webhooks.model_copy(update={"public_base_url": args.public_url})
        settings = settings.model_copy(update={"webhooks": webhooks})
    gate = Gatekeeper.from_settings(settings)
    metrics_server = None
    try:
        app = create_app(gate, url_prefix=args.prefix)  # /metrics only behind [metrics] bearer_token
        metrics_server = serve_metrics(settings)  # [metrics] port: a port of its own, not the webhooks'
        sys.stdout.write(f"Gatekeeper webhooks on http://{args.host}:{args.port}{args.prefix} (waitress)\n")
        wh = settings.webhooks
        base = wh.public_base_url or "https://<the host Twilio calls>"
        sys.stdout.write("Give Twilio these URLs (the fragment sets how Twilio retries: connection overrides):\n")
        for what, url in webhook_urls(base, args.prefix, wh.connection_overrides).items():
            sys.stdout.write(f"  {what}: {url}\n")
        sys.stdout.write(metrics_note(settings, metrics_server) + "\n")
        sys.stdout.flush()
        waitress.serve(app, host=args.host, port=args.port, threads=args.threads, ident="gatekeeper")
    finally:
        if metrics_server is not None:
            metrics_server.close()
        gate.close()
    return EXIT_OK


def cmd_sandbox(args: argparse.Namespace) -> int:
    from gatekeeper.wiring import serve_sandbox

    serve_sandbox(_settings(args), host=args.host, port=args.port, out=sys.stdout)
    return EXIT_OK


# -- parsing ----------------------------------------------------------------------------
class _Version(argparse.Action):
    """``--version``: argparse's own action wants the text up front; reading the installed metadata costs more
    than parsing, so this one reads it only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from gatekeeper import __version__

        sys.stdout.write(f"{parser.prog} {__version__}\n")  # on stdout, as argparse's own version action
        parser.exit()


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0: {text!r}")
        return value

    return parse


def _common_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    # After the command name the options must not reset what was given before it: SUPPRESS there.
    config_default = None if defaults else argparse.SUPPRESS
    verbose_default = 0 if defaults else argparse.SUPPRESS
    parser.add_argument(
        "--config",
        type=Path,
        default=config_default,
        help="settings TOML (default: $GATEKEEPER_CONFIG, else environment only)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=verbose_default, help="log more (-vv: debug)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatekeeper",
        description="Decide, before a Twilio call costs money or breaks a rule, whether and how to reach a number.",
    )
    parser.add_argument("--version", action=_Version, help="print the version and exit")
    _common_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)  # also accepted after the command name
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser(
        "demo", parents=[common], help="run the offline story: sandbox + webhooks, every step checked"
    ).set_defaults(func=cmd_demo)

    check = sub.add_parser("check", parents=[common], help="the decision and facts for one number")
    check.add_argument("number")
    check.add_argument("--country", help="ISO-2 hint for national formats (default: [lookup] default_country_code)")
    check.add_argument("--purpose", choices=("notify", "mfa"), default="notify")
    check.add_argument("--json", action="store_true", help="print the Decision as JSON")
    check.add_argument("--client-key", help='who would ask ("ip:203.0.113.9"), for the guard\'s client rules')
    check.add_argument(
        "--last-verified", metavar="DAY", help="when you last confirmed the number was theirs (2026-01-15): Lookup's "
        "reassigned_number is asked for that day ([policy] reassigned)"
    )
    check.add_argument("--sandbox", action="store_true", help="ask an in-process sandbox instead of Twilio")
    check.set_defaults(func=cmd_check)

    replay = sub.add_parser(
        "replay", parents=[common], help="decide the audit trail again under another policy; print what changes"
    )
    replay.add_argument("--policy", type=Path, required=True, help="the settings file to try ([policy], [guard] …)")
    replay.add_argument("--since", help="only decisions this recent: '7d', '12h' (default: every one kept)")
    replay.add_argument("--limit", type=_positive(int), default=100_000, help="the newest decisions read at most")
    replay.set_defaults(func=cmd_replay)

    enrich = sub.add_parser(
        "enrich", parents=[common], help="batch Lookup of a CSV into JSON Lines (rate-limited, resumable)"
    )
    enrich.add_argument("input", type=Path, help="CSV with a header and a phone column")
    enrich.add_argument("-o", "--output", type=Path, required=True, help="JSON Lines output; re-runs resume it")
    enrich.add_argument("--rate", type=_positive(float), default=50.0, help="Lookups per second, never exceeded")
    enrich.add_argument(
        "--concurrency",
        type=_positive(int),
        help="rows decided at once, so Lookups in flight at most (default: the rate, between 8 and 64)",
    )
    enrich.add_argument("--fields", help="comma-separated Lookup fields (default: [lookup] default_fields)")
    enrich.add_argument("--country", help="ISO-2 hint for rows without a country column")
    enrich.add_argument("--purpose", choices=("notify", "mfa"), default="notify")
    enrich.add_argument("--sandbox", action="store_true", help="enrich against an in-process sandbox")
    enrich.set_defaults(func=cmd_enrich)

    serve = sub.add_parser("serve", parents=[common], help="serve the Twilio webhooks (waitress)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_positive(int), default=8080)
    serve.add_argument("--prefix", default="/twilio", help="URL prefix of the routes (default /twilio)")
    serve.add_argument("--threads", type=_positive(int), default=8)
    serve.add_argument(
        "--public-url",
        help="the public URL of this server's root, as Twilio calls it ([webhooks] public_base_url); signatures "
        "are checked against it",
    )
    serve.set_defaults(func=cmd_serve)

    sandbox = sub.add_parser("sandbox", parents=[common], help="run the Twilio emulator alone, for developing against")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    sandbox.set_defaults(func=cmd_sandbox)
    return parser


def _one_line(exc: BaseException) -> str:
    from gatekeeper.phone import mask_text

    if isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    else:
        text = " ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
    return mask_text(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help, --version and usage errors exit here, having imported nothing heavy
    _setup_logging(args.verbose)
    from gatekeeper.errors import GatekeeperError

    try:
        code: int = args.func(args)
        return code
    except (GatekeeperError, ValueError, OSError) as exc:
        sys.stderr.write(f"gatekeeper: error: {_one_line(exc)}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write("gatekeeper: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
