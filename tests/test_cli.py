"""The gatekeeper command: each command's happy path and its bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from support import clean_env, free_port

from gatekeeper.cli import main
from gatekeeper.sandbox import TEST_ACCOUNT_SID, TEST_AUTH_TOKEN, sandbox_client

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("root_logging_restored")  # every test here runs main()


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TWILIO_ACCOUNT_SID",
        "TWILIO_AUTH_TOKEN",
        "TWILIO_API_KEY_SID",
        "TWILIO_API_KEY_SECRET",
        "GATEKEEPER_CONFIG",
        "GATEKEEPER_REDIS_URL",
        "GATEKEEPER_SANDBOX_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """gatekeeper --help and each command's --help exit 0 and describe it."""
    for argv in (
        ["--help"],
        ["demo", "--help"],
        ["check", "--help"],
        ["enrich", "--help"],
        ["serve", "--help"],
        ["sandbox", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
        assert "usage: gatekeeper" in capsys.readouterr().out


def test_demo_tells_the_whole_story(capsys: pytest.CaptureFixture[str]) -> None:
    """The demo runs offline and every step behaves as stated."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "8/8 steps behaved as stated" in out
    assert "+14155550100" not in out  # numbers are masked in the table


def test_check_in_the_sandbox(capsys: pytest.CaptureFixture[str]) -> None:
    """check --sandbox --json prints the decision with its facts."""
    assert main(["check", "(415) 555-0101", "--country", "US", "--sandbox", "--json"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["action"] == "voice"
    assert decision["facts"]["line_type"] == "landline"
    assert main(["check", "+14155550102", "--purpose", "mfa", "--sandbox"]) == 0
    assert "totp" in capsys.readouterr().out


def test_check_shows_the_guard_rules_a_number_would_count_in(capsys: pytest.CaptureFixture[str]) -> None:
    """check names each velocity rule an attempt would count in, with its limit, and counts nothing itself: a
    sixth look at one number is not refused."""
    args = ["check", "+14155550100", "--purpose", "mfa", "--sandbox", "--client-key", "ip:203.0.113.9"]
    for _ in range(6):
        assert main(args) == 0
    out = capsys.readouterr().out
    assert "velocity:prefix:+1415555:10m: past 10 per 10m it refuses" in out
    assert "velocity:client:ip:203.0.113.9:10m" in out and "velocity:number:10m" in out


def test_check_asks_whether_a_number_was_reassigned_since_a_day(capsys: pytest.CaptureFixture[str]) -> None:
    """check --last-verified asks Lookup's reassigned_number for that day (the answer in the facts); a day that is
    not one is one clear line, exit 1."""
    assert main(["check", "+14155550100", "--sandbox", "--json", "--last-verified", "2026-01-15"]) == 0
    assert json.loads(capsys.readouterr().out)["facts"]["reassigned"] == "no"
    assert main(["check", "+14155550100", "--sandbox", "--last-verified", "2026-01-15"]) == 0
    assert re.search(r"reassigned\s+no", capsys.readouterr().out)
    assert main(["check", "+14155550100", "--sandbox", "--last-verified", "soon"]) == 1
    assert "last_verified is a date" in capsys.readouterr().err


def test_check_refusal_and_bad_number(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused number exits 3 with its Twilio code; garbage is refused, never a crash."""
    assert main(["check", "not a number", "--sandbox"]) == 3
    assert "21211" in capsys.readouterr().out


def test_bad_input_is_one_clear_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Unknown options exit 2; missing config, bad config or no credentials exit 1 with one line."""
    with pytest.raises(SystemExit) as info:
        main(["check", "+14155550100", "--frobnicate"])
    assert info.value.code == 2
    assert "unrecognized arguments: --frobnicate" in capsys.readouterr().err

    assert main(["check", "+14155550100", "--config", str(tmp_path / "missing.toml")]) == 1
    assert capsys.readouterr().err.strip() == f"gatekeeper: error: config file not found: {tmp_path / 'missing.toml'}"

    bad = tmp_path / "bad.toml"
    bad.write_text('[lookup]\ndefault_fields = ["line_tipe"]\n')
    assert main(["--config", str(bad), "check", "+14155550100"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lookup.default_fields" in err

    assert main(["check", "+14155550100"]) == 1
    assert "no Twilio credentials" in capsys.readouterr().err


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gatekeeper.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    return proc, first


def test_sandbox_command_serves_twilio_paths() -> None:
    """gatekeeper sandbox prints its URL and the test pair, then answers the real SDK."""
    proc, first = _start(["sandbox", "--port", "0"], clean_env())
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert url, first
        credentials = proc.stdout.readline()  # type: ignore[union-attr]
        assert TEST_ACCOUNT_SID in credentials and TEST_AUTH_TOKEN in credentials
        client = sandbox_client(url.group(0), TEST_ACCOUNT_SID, TEST_AUTH_TOKEN)
        answer = client.lookups.v2.phone_numbers("+14155550100").fetch(fields="line_type_intelligence")
        assert answer.line_type_intelligence["type"] == "mobile"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sandbox_command_accepts_configured_credentials_and_never_prints_them() -> None:
    """With TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN set, those open the sandbox and the token is not printed."""
    sid, token = "AC" + "7" * 32, "my-real-looking-token"
    proc, first = _start(["sandbox", "--port", "0"], clean_env(TWILIO_ACCOUNT_SID=sid, TWILIO_AUTH_TOKEN=token))
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+", first).group(0)  # type: ignore[union-attr]
        credentials = proc.stdout.readline()  # type: ignore[union-attr]
        assert sid in credentials and token not in credentials
        assert sandbox_client(url, sid, token).lookups.v2.phone_numbers("+14155550101").fetch().valid
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert token not in out + err


def test_serve_mounts_the_webhooks() -> None:
    """gatekeeper serve runs the blueprint under waitress; a health check answers and unsigned posts get 403;
    /metrics is served on [metrics] port, counting that 403, and not on the public webhook port."""
    sock_port, metrics_port = free_port(), free_port()
    env = clean_env(
        TWILIO_ACCOUNT_SID="AC" + "7" * 32, TWILIO_AUTH_TOKEN="serve-token", GATEKEEPER_METRICS__PORT=str(metrics_port)
    )
    proc, first = _start(["serve", "--port", str(sock_port), "--public-url", f"http://127.0.0.1:{sock_port}"], env)
    try:
        assert f":{sock_port}/twilio" in first
        advice = [proc.stdout.readline() for _ in range(6)]  # type: ignore[union-attr]
        assert f"Metrics on http://127.0.0.1:{metrics_port}/metrics" in advice[5]
        assert "connection overrides" in advice[0]
        assert f"http://127.0.0.1:{sock_port}/twilio/messages/inbound#rc=5&rp=all" in advice[1]
        assert "/twilio/calls/status#rc=5&rp=all" in advice[3]
        base = f"http://127.0.0.1:{sock_port}/twilio"
        deadline = time.monotonic() + 10
        while True:
            try:
                health = requests.get(base + "/healthz", timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert health.status_code == 200
        assert requests.post(base + "/messages/inbound", data={"Body": "STOP"}, timeout=5).status_code == 403
        assert requests.get(f"http://127.0.0.1:{sock_port}/metrics", timeout=5).status_code == 404
        metrics = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert metrics.status_code == 200
        assert 'gatekeeper_webhook_events_total{outcome="forbidden",route="inbound"} 1.0' in metrics.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_without_credentials_fails_clearly() -> None:
    """serve needs the auth token to check signatures: without it, one line and exit 1."""
    out = subprocess.run(
        [sys.executable, "-m", "gatekeeper.cli", "serve", "--port", "8089"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert out.stderr.startswith("gatekeeper: error:")
    assert out.stderr.count("\n") == 1


def test_enrich_happy_path_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """enrich --sandbox writes one record per row, malformed rows as errors; a re-run skips what is done."""
    source = tmp_path / "in.csv"
    source.write_text(
        "name,phone\nAlex,+14155550100\nBo,(415) 555-0101\nbad,row,extra\nCy,not a number\nAlex again,+14155550100\n"
    )
    out = tmp_path / "out.jsonl"
    assert main(["enrich", str(source), "-o", str(out), "--sandbox", "--rate", "100"]) == 0
    summary = capsys.readouterr().out
    assert "rows 5  looked up 2  cached 1  refused 1  errors 1" in summary
    records = sorted((json.loads(line) for line in out.read_text().splitlines()), key=lambda r: r["row"])
    assert [r["status"] for r in records] == ["ok", "ok", "error", "refused", "ok"]
    assert records[1]["facts"]["line_type"] == "landline"
    assert "3 fields" in records[2]["error"]
    assert main(["enrich", str(source), "-o", str(out), "--sandbox"]) == 0
    assert "skipped (already done) 5" in capsys.readouterr().out
    assert len(out.read_text().splitlines()) == 5


def test_enrich_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file or a bad option is one clear line, never a traceback."""
    assert main(["enrich", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "o.jsonl"), "--sandbox"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gatekeeper: error:") and "does not exist" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        main(["enrich", "in.csv", "-o", "o.jsonl", "--rate", "fast"])
    assert info.value.code == 2
    assert "--rate: not a number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["enrich", "in.csv"])  # -o is required
    assert "-o/--output" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--fast"], "unrecognized arguments: --fast"),
        (["sandbox", "--port", "eighty"], "invalid int value"),
        (["serve", "--port", "-1"], "must be greater than 0"),
        (["check", "+14155550100", "--purpose", "marketing"], "invalid choice: 'marketing'"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_usage_errors_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown options, commands or values exit 2 with argparse's one-line reason."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_to_start_without_a_pinned_url(tmp_path: Path) -> None:
    """Without --public-url, [webhooks] public_base_url or allowed_hosts, serve exits 1 with one line saying
    what to set, before listening (signatures would otherwise be checked against any Host)."""
    env = clean_env(TWILIO_ACCOUNT_SID="AC" + "7" * 32, TWILIO_AUTH_TOKEN="serve-token")
    done = subprocess.run(
        [sys.executable, "-m", "gatekeeper.cli", "serve", "--port", "8089"],
        capture_output=True, text=True, env=env, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert "public_base_url" in done.stderr and "allowed_hosts" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Gatekeeper webhooks on" not in done.stdout
