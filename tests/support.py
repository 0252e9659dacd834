"""Test doubles shared by the suite: a fake clock, Twilio over ``responses``, a private Redis."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
import responses

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ACCOUNT_SID = "AC" + "0" * 32
AUTH_TOKEN = "test-auth-token"  # a fake credential for intercepted HTTP
API = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}"
LOOKUP = re.compile(r"https://lookups\.twilio\.com/v2/PhoneNumbers/(?P<number>[^?]+)")
PYPROJECT: dict[str, Any] = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())


class FakeClock:
    """A clock tests move by hand; ``sleep`` advances it and records the request."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- Twilio over intercepted HTTP ---------------------------------------------------------
LINE_TYPES = {
    "+14155552671": "mobile",
    "+14155552672": "landline",
    "+14155552673": "nonFixedVoip",
    "+14155552674": "fixedVoip",
    "+14155552675": "premium",
    "+447911123456": "mobile",
}


@dataclass
class FakeTwilio:
    """Twilio's endpoints as ``responses`` callbacks, with counters and scripted faults."""

    mock: responses.RequestsMock
    lookups: Counter[str] = field(default_factory=Counter)
    lookup_fields: list[str] = field(default_factory=list)
    # Per-number queue of scripted answers: (status, headers, body) or an exception instance.
    faults: dict[str, list[Any]] = field(default_factory=dict)
    line_types: dict[str, str] = field(default_factory=lambda: dict(LINE_TYPES))
    invalid: set[str] = field(default_factory=set)
    lookup_delay_seconds: float = 0.0
    sent: list[dict[str, str]] = field(default_factory=list)
    calls: list[dict[str, str]] = field(default_factory=list)
    verifications: list[dict[str, str]] = field(default_factory=list)
    send_faults: list[Any] = field(default_factory=list)
    # Numbers whose Lookup answer names another number, as a broken proxy or a mix-up would.
    answer_as: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def lookup_answer(self, number: str, fields: str) -> dict[str, Any]:
        if number in self.invalid:
            return {
                "phone_number": number,
                "valid": False,
                "validation_errors": ["INVALID_BUT_POSSIBLE"],
                "country_code": None,
                "line_type_intelligence": None,
            }
        body: dict[str, Any] = {
            "phone_number": self.answer_as.get(number, number),
            "country_code": "GB" if number.startswith("+44") else "US",
            "calling_country_code": "44" if number.startswith("+44") else "1",
            "national_format": number,
            "valid": True,
            "validation_errors": [],
            "caller_name": None,
            "line_type_intelligence": None,
            "sms_pumping_risk": None,
            "url": f"https://lookups.twilio.com/v2/PhoneNumbers/{number}",
        }
        if "line_type_intelligence" in fields:
            body["line_type_intelligence"] = {
                "type": self.line_types.get(number, "mobile"),
                "carrier_name": "Carrier One",
                "mobile_country_code": "310",
                "mobile_network_code": "260",
                "error_code": None,
            }
        if "sms_pumping_risk" in fields:
            body["sms_pumping_risk"] = {
                "sms_pumping_risk_score": 12,
                "carrier_risk_category": "low",
                "number_blocked": False,
                "error_code": None,
            }
        if "caller_name" in fields:
            body["caller_name"] = {"caller_name": "ALEX DOE", "caller_type": "CONSUMER", "error_code": None}
        return body

    def _lookup(self, request: Any) -> tuple[int, dict[str, str], str]:
        match = LOOKUP.match(request.url)
        assert match is not None
        number = match["number"].replace("%2B", "+")
        fields = dict(x.split("=", 1) for x in request.url.split("?", 1)[1].split("&")) if "?" in request.url else {}
        with self._lock:
            self.lookups[number] += 1
            self.lookup_fields.append(fields.get("Fields", "").replace("%2C", ","))
            scripted = self.faults.get(number) or self.faults.get("*")
            fault = scripted.pop(0) if scripted else None
        if self.lookup_delay_seconds:
            time.sleep(self.lookup_delay_seconds)
        if isinstance(fault, BaseException):
            raise fault
        if fault is not None:
            status, headers, body = fault
            return status, headers, json.dumps(body)
        return 200, {}, json.dumps(self.lookup_answer(number, fields.get("Fields", "").replace("%2C", ",")))

    def _create(self, kind: str, prefix: str, request: Any) -> tuple[int, dict[str, str], str]:
        from urllib.parse import parse_qs

        form = {k: v[0] for k, v in parse_qs(request.body or "").items()}
        with self._lock:
            fault = self.send_faults.pop(0) if self.send_faults else None
        if isinstance(fault, BaseException):
            raise fault
        if fault is not None:
            status, headers, body = fault
            return status, headers, json.dumps(body)
        with self._lock:
            target = {"message": self.sent, "call": self.calls, "verification": self.verifications}[kind]
            target.append(form)
            sid = f"{prefix}{len(target):032x}"
        status = "pending" if kind == "verification" else "queued"
        return 201, {}, json.dumps({"sid": sid, "status": status, "to": form.get("To"), "channel": form.get("Channel")})


# -- processes ----------------------------------------------------------------------------
def clean_env(*also_dropped: str, **extra: str) -> dict[str, str]:
    """This process's environment without the shell's TWILIO_* and GATEKEEPER_* variables (and those starting with
    ``also_dropped``), plus ``extra``: what a child process the test starts reads, so a developer's own settings
    never reach it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "GATEKEEPER_", *also_dropped))}
    env.update(extra)
    return env


# -- Redis --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


class PrivateRedis:
    """A redis-server of the test's own, on a free port, that tests may stop and start (never the shared one).

    With ``persist_dir`` it keeps an append-only file there, so a restart keeps its data as a real
    deployment would.
    """

    def __init__(self, persist_dir: Path | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("no Redis reachable on 127.0.0.1:6379 and no redis-server binary to start one")
        self.port = free_port()
        persist = (
            ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(persist_dir)]
            if persist_dir
            else ["--appendonly", "no"]
        )
        self.args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persist]
        self.proc: subprocess.Popen[str] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        # Wait on the server's own log line, not a sleep: ready means the data set is loaded too.
        for line in self.proc.stdout:
            if "Ready to accept connections" in line:
                break
        else:
            raise RuntimeError(f"redis-server on port {self.port} did not start")
        # Keep draining the log so the server never blocks on a full pipe.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: redis flushes its append-only file, then exits
            self.proc.wait(timeout=10)
        self.proc = None


def _server_binaries(*names: str) -> list[str]:
    """The paths of Redis's binaries, or a skip naming the one missing."""
    found = [shutil.which(name) for name in names]
    missing = [name for name, path in zip(names, found, strict=True) if path is None]
    if missing:
        pytest.skip(f"no {' or '.join(missing)} on the PATH: cannot start a private Redis Cluster or Sentinel")
    return [str(path) for path in found]


def _spawn(args: list[str], ready: str, what: str, deadline: float) -> subprocess.Popen[str]:
    """Start a Redis process and wait for ``ready`` in its log (never a sleep), then keep draining the log."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if ready in line:
            break
        if time.monotonic() > deadline:
            break
    else:
        raise RuntimeError(f"{what} did not start:\n{''.join(lines[-20:])}")
    if ready not in lines[-1]:
        proc.kill()
        raise RuntimeError(f"{what} did not start in time:\n{''.join(lines[-20:])}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc


def _free_port_pair() -> tuple[int, int]:
    """Two free ports: a Cluster node's client port and its bus port."""
    while True:
        a, b = free_port(), free_port()
        if a != b:
            return a, b


S = TypeVar("S")


def _on_fresh_ports(start: Callable[[float], S], pick_ports: Callable[[], None], timeout: float, attempts: int) -> S:
    """``start(deadline)``; when a port it was given was taken before its server could bind it (a free port is only
    a guess: another process may get there first), ``pick_ports()`` and try again, ``attempts`` times in all."""
    for _ in range(attempts - 1):
        try:
            return start(time.monotonic() + timeout)
        except RuntimeError as exc:
            if "Address already in use" not in str(exc):
                raise
            pick_ports()
    return start(time.monotonic() + timeout)


def _stop_all(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


class PrivateCluster:
    """A Redis Cluster of the suite's own: ``primaries`` redis-servers (no replicas) on free ports, each in its
    own directory under ``root``, joined by ``redis-cli --cluster create``; ready once every node says
    ``cluster_state:ok`` and agrees on the slots. ``url`` names one node, as ``[redis] url`` does."""

    def __init__(self, root: Path, primaries: int = 3) -> None:
        self.server, self.cli = _server_binaries("redis-server", "redis-cli")
        self.root = root
        self.ports: list[tuple[int, int]] = [(0, 0)] * primaries
        self.procs: list[subprocess.Popen[str]] = []
        self._pick_ports()

    def start(self, timeout: float = 20.0, attempts: int = 3) -> PrivateCluster:
        """Start the nodes and join them (on new ports if one picked was taken: :func:`_on_fresh_ports`)."""
        return _on_fresh_ports(self._start, self._pick_ports, timeout, attempts)

    def _pick_ports(self) -> None:
        self.ports = [_free_port_pair() for _ in self.ports]
        self.url = f"redis://127.0.0.1:{self.ports[0][0]}/0"
        self.urls = [f"redis://127.0.0.1:{port}/0" for port, _ in self.ports]
        self.procs = []

    def _start(self, deadline: float) -> PrivateCluster:
        try:
            for port, bus in self.ports:
                where = self.root / str(port)
                where.mkdir(parents=True, exist_ok=True)
                args = [
                    self.server, "--port", str(port), "--cluster-port", str(bus), "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes", "--cluster-config-file", str(where / "nodes.conf"),
                    "--cluster-node-timeout", "5000", "--dir", str(where), "--save", "", "--appendonly", "no",
                ]  # fmt: skip
                self.procs.append(_spawn(args, "Ready to accept connections", f"cluster node {port}", deadline))
            nodes = [f"127.0.0.1:{port}" for port, _ in self.ports]
            created = subprocess.run(
                [self.cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
                capture_output=True,
                text=True,
                timeout=max(deadline - time.monotonic(), 1),
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}{created.stderr}")
            self._wait_until_ok(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ok(self, deadline: float) -> None:
        """Every node reports the cluster ok, with all 16384 slots assigned, and knows every node."""
        conns = [redis.Redis.from_url(url, socket_timeout=2) for url in self.urls]
        try:
            while True:
                infos = [conn.cluster("info") for conn in conns]
                known = [len(conn.cluster("nodes")) for conn in conns]
                if all(
                    i["cluster_state"] == "ok" and int(i["cluster_slots_ok"]) == 16384 for i in infos
                ) and all(n == len(self.ports) for n in known):
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cluster did not become ok: {infos}")
                time.sleep(0.05)
        finally:
            for conn in conns:
                conn.close()

    def stop(self) -> None:
        _stop_all(self.procs)
        self.procs = []

    def redis_settings(self, prefix: str) -> dict[str, Any]:
        """The ``[redis]`` table a deployment on this cluster writes: any one node, and the mode."""
        return {"mode": "cluster", "url": self.url, "key_prefix": prefix}

    def drop(self, prefix: str) -> None:
        """Delete a test's keys on every node, one DEL per key (a cluster refuses a DEL across slots)."""
        for url in self.urls:
            with redis.Redis.from_url(url, socket_timeout=2) as node:
                for key in list(node.scan_iter(match=f"{prefix}*", count=500)):
                    node.delete(key)

    def stored_text(self, prefix: str) -> str:
        """:func:`stored_redis_text` of every node: each key is read on the node that holds it."""
        return "\n".join(text for url in self.urls if (text := stored_redis_text(url, prefix)))

    def errors(self) -> dict[str, int]:
        """The commands every node refused (MOVED, ASK, CROSSSLOT…) or failed since its stats were last reset, by
        command. A script's NOSCRIPT is left out (redis-py loads the script then, by design), as is the error of
        redis-py's RESP3 handshake on a server that predates it (counted under no command)."""
        counts: dict[str, int] = {}
        for url in self.urls:
            with redis.Redis.from_url(url, socket_timeout=2, driver_info=None) as node:
                noscript = int(node.info("errorstats").get("errorstat_NOSCRIPT", {}).get("count", 0))
                for name, stat in node.info("commandstats").items():
                    command = name.removeprefix("cmdstat_")
                    bad = int(stat.get("rejected_calls", 0)) + int(stat.get("failed_calls", 0))
                    if command == "evalsha":
                        bad -= noscript
                    if bad:
                        counts[command] = counts.get(command, 0) + bad
        return counts

    def reset_stats(self) -> None:
        for url in self.urls:
            with redis.Redis.from_url(url, socket_timeout=2, driver_info=None) as node:
                node.config_resetstat()


class PrivateSentinel:
    """A primary and one Sentinel watching it, on free ports (never the shared Redis), with passwords on both
    so the settings that carry them are exercised: the primary's in ``url``, the Sentinel's apart."""

    service_name = "gkprimary"
    primary_password = "primary-secret"  # a test server's password
    sentinel_password = "sentinel-secret"

    def __init__(self, root: Path) -> None:
        (self.server,) = _server_binaries("redis-server")
        self.root = root
        self.procs: list[subprocess.Popen[str]] = []
        # The host of a Sentinel URL is not connected to: the Sentinel names the primary.
        self.url = f"redis://:{self.primary_password}@{self.service_name}/0"
        self._pick_ports()

    def start(self, timeout: float = 20.0, attempts: int = 3) -> PrivateSentinel:
        """Start the primary and the Sentinel (on new ports if one picked was taken: :func:`_on_fresh_ports`)."""
        return _on_fresh_ports(self._start, self._pick_ports, timeout, attempts)

    def _pick_ports(self) -> None:
        self.primary_port, self.sentinel_port = free_port(), free_port()
        self.primary_url = f"redis://:{self.primary_password}@127.0.0.1:{self.primary_port}/0"
        self.sentinels = [f"127.0.0.1:{self.sentinel_port}"]
        self.procs = []

    def _start(self, deadline: float) -> PrivateSentinel:
        try:
            primary = [
                self.server, "--port", str(self.primary_port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--requirepass", self.primary_password, "--dir", str(self.root),
            ]  # fmt: skip
            self.procs.append(_spawn(primary, "Ready to accept connections", "the Sentinel's primary", deadline))
            config = self.root / "sentinel.conf"  # Sentinel rewrites its file: it must be its own, writable
            config.write_text(
                f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.root}\n"
                f"requirepass {self.sentinel_password}\n"
                f"sentinel monitor {self.service_name} 127.0.0.1 {self.primary_port} 1\n"
                f"sentinel auth-pass {self.service_name} {self.primary_password}\n"
                f"sentinel down-after-milliseconds {self.service_name} 5000\n"
            )
            args = [self.server, str(config), "--sentinel"]
            self.procs.append(_spawn(args, "+monitor master", "redis-server --sentinel", deadline))
            self._wait_for_primary(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_primary(self, deadline: float) -> None:
        with redis.Redis(
            "127.0.0.1", self.sentinel_port, password=self.sentinel_password, socket_timeout=2
        ) as sentinel:
            while True:
                found = sentinel.sentinel_get_master_addr_by_name(self.service_name)
                if found and int(found[1]) == self.primary_port:
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the Sentinel does not name the primary: {found!r}")
                time.sleep(0.05)

    def redis_settings(self, prefix: str) -> dict[str, Any]:
        """The ``[redis]`` table a deployment behind this Sentinel writes: the Sentinel and its password, the
        service, and the primary's password in the URL."""
        return {
            "mode": "sentinel",
            "url": self.url,
            "sentinels": self.sentinels,
            "service_name": self.service_name,
            "sentinel_password": self.sentinel_password,
            "key_prefix": prefix,
        }

    def drop(self, prefix: str) -> None:
        drop_prefix(self.primary_url, prefix)

    def stop(self) -> None:
        _stop_all(self.procs)
        self.procs = []


def drop_prefix(url: str, prefix: str) -> None:
    """Delete a test's Redis keys (SCAN, never KEYS)."""
    conn = redis.Redis.from_url(url, socket_timeout=2)
    try:
        keys = list(conn.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            conn.delete(*keys)
    except redis.RedisError:
        pass
    finally:
        conn.close()


def stored_redis_text(url: str, prefix: str) -> str:
    """Everything a Redis holds under ``prefix`` as text, one line per key: its name, type and whole value (strings,
    hashes, lists, sets, sorted sets with scores, streams with their IDs). A type it cannot read fails loudly, so a
    test asserting something is *not* stored cannot pass by reading nothing."""
    readers: dict[str, Callable[[redis.Redis, bytes], Any]] = {
        "string": lambda r, k: r.get(k),
        "hash": lambda r, k: r.hgetall(k),
        "list": lambda r, k: r.lrange(k, 0, -1),
        "set": lambda r, k: sorted(r.smembers(k)),
        "zset": lambda r, k: r.zrange(k, 0, -1, withscores=True),
        "stream": lambda r, k: r.xrange(k),
    }
    with redis.Redis.from_url(url, socket_timeout=2) as conn:
        lines = []
        for key in sorted(conn.scan_iter(match=f"{prefix}*", count=500)):
            kind = conn.type(key).decode()
            if kind == "none":  # expired between SCAN and TYPE
                continue
            lines.append(f"{key!r} {kind} {readers[kind](conn, key)!r}")
        return "\n".join(lines)


def run_threads(n: int, target: Callable[[int], Any]) -> list[Any]:
    """Run ``target(i)`` in ``n`` threads released at once; returns results (or exceptions) in order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target(i)
        except Exception as exc:  # collected for the test to assert on
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def most_in_one_second(times: list[float]) -> int:
    """The most events in any half-open one-second window [t, t + 1), as the sandbox's strict limit counts them
    (shared by ``tests/batch/test_shared_budget.py`` and ``bench/enrich.py``)."""
    times = sorted(times)
    most, j = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - 1.0:
            j += 1
        most = max(most, i - j + 1)
    return most
