"""Consent watched by Redis itself: a repeated number's screening without a round trip.

The gate screens a repeated number on every send, unless the store can tell that nothing suppressing was written
since the number was last found clear (``stores.base.SuppressionVersion``). The memory store counts its writes and
SQLite reads ``data_version``; here Redis tells. One connection per store asks the server to track the key prefixes
that suppress (``CLIENT TRACKING ON BCAST PREFIX {prefix}optout: …``, redirected to itself, subscribed to
``__redis__:invalidate``), so the server pushes a message for every write to those keys by anyone: another host,
an older Gatekeeper that knows nothing of this, ``redis-cli``, a script, an expiry, ``FLUSHALL``. The version is the
count of messages received on that connection. Nothing has to publish: a host that writes without knowing of the
watch is still seen.

What it holds: a count, and when Redis last proved that every push before then has arrived. That proof is a
``PING``'s answer: Redis answers in order on one connection, so once the pong for a ping sent at time *t* is read,
every push for a write Redis made before *t* has been counted. A ping goes out, unawaited, when the last proof is
``max_silence / 4`` old and a caller asks; a caller that finds the last proof older than ``max_silence`` (an idle
process, a link gone quiet) waits for a pong, one round trip, as the screening would have cost. What ends the
trust, so that the gate reads Redis on the next send as it would without the watch: the connection lost, not yet
made, or not answering in the store's timeout (a new connection is a new epoch: no mark from before it equals a
version after). What it buys: the screening round trip of a repeated number's send (a fifth to a quarter of a
send to a local Twilio).

The bound: a write by another process is seen here once its push has reached this host, and never more than
``max_silence`` after Redis made it. Every caller reads what has arrived before it answers (a non-blocking read),
so what remains is the time from Redis's answer to the writer to its push reaching this process: Redis writes the
two in the same turn of its event loop, so about one network delay, far less than Twilio takes to deliver the
STOP itself. Own writes are counted by the store as they return (see ``RedisStore.suppression_version``), so a
process never misses its own. With ``max_silence = 0`` there is no watch, and every send reads Redis.

Standalone Redis only: a cluster pushes per node, and a Sentinel failover can move the primary under a
connection that stays open, so on those the version is never trusted and every send reads Redis, as before.
Callers never wait on another caller: one that finds another thread reading the connection, or the connection
being remade (at most once a second), is told to read Redis instead. The asyncio store's watch (``wait=False``)
never waits on Redis either: it connects in a thread of its own, and after a silence it sends its ping and reads
Redis until the pong is in; its connection is a blocking one, read only when the socket has data.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from redis.asyncio import connection as aconnection
from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeout

log = logging.getLogger("gatekeeper.stores")

CHANNEL = b"__redis__:invalidate"
RETRY_SECONDS = 1.0
PONG_SECONDS = 2.0  # the longest a caller waits for a pong (less when the client's socket timeout is less)


class ConsentWatch:
    """The version of the consent keys under ``prefixes``, as the pushes of one tracking connection count it.

    ``open_connection`` makes a new, unconnected redis-py ``Connection`` speaking RESP2 (``watch_connection``);
    ``clock`` is monotonic seconds."""

    def __init__(
        self,
        open_connection: Callable[[], Any],
        prefixes: Sequence[str],
        *,
        max_silence: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        wait: bool = True,
    ) -> None:
        """``wait``: whether a caller may wait on Redis, to connect (three round trips) or for a pong after a silence.
        An event loop's may not: it is told to read Redis instead, while the watch connects in a thread of its own
        or the pong is on its way."""
        self._wait = wait
        self._open = open_connection
        self._prefixes = tuple(prefixes)
        self._max_silence = max_silence
        self._heartbeat = max_silence / 4
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: Any = None
        self._epoch = 0
        self._seen = 0  # pushes received on this epoch's connection
        self._confirmed = float("-inf")  # when the ping last answered was sent: every earlier push is counted
        self._ping: tuple[bytes, float] | None = None  # the ping awaiting its pong: nonce, when sent
        self._nonces = itertools.count()
        self._retry_at = float("-inf")
        self._closed = False
        self._pid = os.getpid()
        self._quiet = False  # the watch's trouble told already: told again only once it has worked in between

    def version(self) -> Hashable:
        """``(epoch, pushes seen)`` while the watch can vouch for it, else a new object, equal to nothing."""
        if self._pid != os.getpid():
            self._forked()
        if self._max_silence <= 0 or not self._lock.acquire(blocking=False):
            return object()
        try:
            now = self._clock()
            if self._conn is None and not self._connected(now):
                return object()
            conn = self._conn
            while conn.can_read(timeout=0):  # count what has arrived, without waiting for more
                self._take(conn.read_response())
            if self._ping is None and now - self._confirmed >= self._heartbeat:
                self._send_ping(now)
            while now - self._confirmed > self._max_silence:
                # Silent too long (an idle process, or a link gone quiet): wait for a ping's answer, one round
                # trip, as the screening would have cost; a Redis that does not answer in time ends the watch.
                if self._ping is None:
                    self._send_ping(now)
                if not self._wait:
                    return object()
                if not conn.can_read(timeout=min(conn.socket_timeout or PONG_SECONDS, PONG_SECONDS)):
                    raise RedisTimeout("no answer to the consent watch's ping")  # bounded, whatever the client's
                self._take(conn.read_response())
            return (self._epoch, self._seen)
        except (RedisError, OSError, ValueError) as exc:
            self._lose(exc)
            return object()
        finally:
            self._lock.release()

    def _connected(self, now: float) -> bool:
        """Connect now (at most once a second), or, when the caller may not wait, in a thread of its own."""
        if self._closed or now < self._retry_at:
            return False
        self._retry_at = now + RETRY_SECONDS
        if self._wait:
            return self._start(now)
        threading.Thread(target=self._start_behind, name="gatekeeper-consent-watch", daemon=True).start()
        return False

    def _start_behind(self) -> None:
        with self._lock:
            if self._conn is None and not self._closed:
                self._start(self._clock())

    def _start(self, now: float) -> bool:
        try:
            conn = self._open()
        except (TypeError, ValueError) as exc:  # options a connection of this redis-py does not take
            self._tell("consent watch unavailable (%s): every send reads Redis", exc)
            return False
        try:
            conn.connect()
            conn.send_command("CLIENT", "ID")
            ident = conn.read_response()
            tracking = ["CLIENT", "TRACKING", "ON", "REDIRECT", ident, "BCAST"]
            for prefix in self._prefixes:
                tracking += ["PREFIX", prefix]
            conn.send_command(*tracking)
            conn.read_response()
            conn.send_command("SUBSCRIBE", CHANNEL)
            conn.read_response()  # subscribed: every write after this is pushed here
        except (RedisError, OSError, ValueError) as exc:
            conn.disconnect()
            self._tell("consent watch unavailable (%s): every send reads Redis until it is back", exc)
            return False
        self._conn, self._epoch, self._seen, self._quiet = conn, self._epoch + 1, 0, False
        self._confirmed, self._ping = now, None
        return True

    def _send_ping(self, now: float) -> None:
        nonce = b"%d" % next(self._nonces)
        self._conn.send_command("PING", nonce)
        self._ping = (nonce, now)

    def _take(self, message: object) -> None:
        """Count a push; a pong confirms everything Redis wrote before its ping."""
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind == b"message" and len(message) == 3 and message[1] == CHANNEL:
            self._seen += 1
        elif kind == b"pong" and self._ping is not None and message[1:] == [self._ping[0]]:
            self._confirmed, self._ping = self._ping[1], None

    def _tell(self, message: str, exc: BaseException) -> None:
        if not self._quiet:
            log.warning(message, type(exc).__name__)
            self._quiet = True

    def _lose(self, exc: BaseException) -> None:
        self._tell("consent watch lost (%s): every send reads Redis until it is back", exc)
        conn, self._conn, self._ping = self._conn, None, None
        self._epoch += 1  # no mark from the lost connection equals a version of the next
        self._retry_at = self._clock() + RETRY_SECONDS
        if conn is not None:
            conn.disconnect()

    def _forked(self) -> None:
        """In a child process (a pre-forking server's worker): the parent's connection is the parent's. Read from
        here too, the two would split its pushes between them, each missing the other's share; so the child
        drops it (redis-py closes only its own descriptor, the parent's stays open) and makes its own."""
        self._lock = threading.Lock()  # held by another thread of the parent, perhaps, when it forked
        if self._conn is not None:
            self._conn.disconnect()
        self._conn, self._ping, self._pid = None, None, os.getpid()
        self._epoch += 1
        self._retry_at = float("-inf")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.disconnect()
                self._conn = None


class ConsentVersion:
    """What a Redis store's ``suppression_version`` answers: the watch's count of pushes, and the store's own
    suppressing writes, counted as they return (so a process never waits on Redis's push to see what it wrote
    itself). Without a watch (a cluster, a Sentinel, ``consent_watch_ms = 0``) a new object each time: never
    trusted, so the gate reads Redis on every send."""

    #: The kinds of key (``stores.base``'s layout) whose writes can suppress a number.
    SUPPRESSING = ("optout", "fail", "supp")

    def __init__(self) -> None:
        self.watch: ConsentWatch | None = None
        self._writes = 0
        self._lock = threading.Lock()

    def watch_with(self, client: Any, prefix: str, max_silence: float, *, wait: bool) -> None:
        """Watch the keys under ``prefix`` on a connection like ``client``'s, when a watch can vouch there."""
        opener = watch_connection(client) if max_silence > 0 else None
        if opener is not None:
            prefixes = [f"{prefix}{kind}:" for kind in self.SUPPRESSING]
            self.watch = ConsentWatch(opener, prefixes, max_silence=max_silence, wait=wait)

    def read(self) -> Hashable:
        watch = self.watch
        return object() if watch is None else (watch.version(), self._writes)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Around a suppressing write: counted once it returns, or fails (it may have been written before its
        answer was lost)."""
        try:
            yield
        finally:
            with self._lock:
                self._writes += 1

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()


def watch_connection(client: Any) -> Callable[[], Any] | None:
    """How to open a RESP2 connection like the pool of ``client`` (a standalone ``redis.Redis``) makes, or None
    where a watch cannot vouch (a cluster, a Sentinel-managed primary, a pool of another kind)."""
    pool = getattr(client, "connection_pool", None)
    cls: object = getattr(pool, "connection_class", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict) or "connection_pool" in kwargs:  # a Sentinel-managed primary
        return None
    if isinstance(cls, type) and issubclass(cls, (Connection, UnixDomainSocketConnection)):
        options = {k: v for k, v in kwargs.items() if not k.startswith("maint_")}  # RESP3-only push handling
    elif (made := _BLOCKING_OF.get(cls)) is not None:  # an asyncio pool: the blocking twin, with what it names
        options = {k: v for k, v in kwargs.items() if k in _PLAIN or k.startswith("ssl_")}
        cls = made
    else:
        return None
    # RESP2 (pushes as pub/sub messages), and bytes whatever the client decodes to: a push read as text would
    # match nothing, and go uncounted.
    options.update(protocol=2, decode_responses=False, health_check_interval=0, client_name="gatekeeper-consent-watch")
    opener: Callable[..., Any] = cls
    return lambda: opener(**options)


#: What an asyncio pool's connection options say that a blocking connection takes alike (its retry object,
#: parser and handlers are the event loop's own).
_PLAIN = frozenset(
    ("host", "port", "path", "db", "username", "password", "socket_timeout", "socket_connect_timeout")
)
_BLOCKING_OF: dict[object, type] = {
    aconnection.Connection: Connection,
    aconnection.SSLConnection: SSLConnection,
    aconnection.UnixDomainSocketConnection: UnixDomainSocketConnection,
}
