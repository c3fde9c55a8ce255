# SPDX-License-Identifier: MIT
"""A client for hyperampd's control protocol (docs/protocol.md), standard
library only.

    import hyperamp
    with hyperamp.Client() as c:            # the socket path as hyperampctl finds it
        c.ping()["version"]
        r = c.submit("encrypt", b"hello")   # r.status == "SUCCESS", r.data: the result
        rs = c.submit_many([("encrypt", b"a"), ("echo", b"b")])   # pipelined
        c.stats()["requests"]["completed"]

An error reply raises hyperamp.Error with its stable code ("E_BUSY",
"E_INVALID", ...).  A service result that is not SUCCESS is not an error:
it is the Result's status ("FAIL", "NOT_EXITS").  One Client is one
connection; it is not thread-safe.
"""
import collections
import errno
import json
import os
import socket
import struct

__all__ = ["Client", "Error", "Result", "default_socket_path", "SYSTEM_SOCKET"]

PROTOCOL = 1
MAX_JSON = 64 * 1024
SYSTEM_SOCKET = "/run/hyperamp/hyperampd.sock"

Result = collections.namedtuple("Result", "service status code latency_us data")
Result.__doc__ = """One submit's answer: service id, status ("SUCCESS", "FAIL",
"NOT_EXITS"), its numeric code, the daemon's latency in microseconds, and
the result bytes (empty unless SUCCESS)."""


class Error(Exception):
    """An error reply: .code is the stable code string, .message the text."""

    def __init__(self, code, message, id=None):
        super().__init__("%s: %s" % (code, message))
        self.code = code
        self.message = message
        self.id = id


def default_socket_path():
    """The daemon's socket path, resolved as hyperampd and hyperampctl do."""
    env = os.environ.get("HYPERAMP_SOCKET")
    if env:
        return env
    rd = os.environ.get("RUNTIME_DIRECTORY")
    if rd:
        return os.path.join(rd.split(":")[0], "hyperampd.sock")
    if os.geteuid() == 0:
        return SYSTEM_SOCKET
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "hyperamp", "hyperampd.sock")
    return "/tmp/hyperamp-%d/hyperampd.sock" % os.getuid()


def _encode(obj, payload=b""):
    j = json.dumps(obj, separators=(",", ":")).encode()
    return struct.pack(">II", len(j), len(payload)) + j + bytes(payload)


class Client:
    """One connection to hyperampd.

    path: the socket; by default default_socket_path(), and when nothing
    listens there and no path was given or set in the environment, the
    system daemon's SYSTEM_SOCKET.  timeout: seconds for each send or
    receive (None: block)."""

    def __init__(self, path=None, timeout=10.0):
        explicit = path is not None or "HYPERAMP_SOCKET" in os.environ
        self.path = path if path is not None else default_socket_path()
        self._sock = None
        self._buf = bytearray()
        self._next_id = 1
        self._limits = None
        try:
            self._sock = self._connect(self.path, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            if explicit or self.path == SYSTEM_SOCKET or not os.path.exists(SYSTEM_SOCKET):
                raise
            self.path = SYSTEM_SOCKET
            self._sock = self._connect(self.path, timeout)

    @staticmethod
    def _connect(path, timeout):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
        except OSError:
            s.close()
            raise
        return s

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- frames ----

    def _send(self, method, params=None, payload=b""):
        rid = self._next_id
        self._next_id += 1
        req = {"v": PROTOCOL, "id": rid, "method": method}
        if params is not None:
            req["params"] = params
        if self._sock is None:
            raise OSError(errno.EBADF, "the client is closed")
        self._sock.sendall(_encode(req, payload))
        return rid

    def _fill(self, n):
        while len(self._buf) < n:
            chunk = self._sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError("hyperampd closed the connection")
            self._buf += chunk

    def _recv(self):
        """One reply: (id, result or Error, payload)."""
        self._fill(8)
        jlen, dlen = struct.unpack(">II", self._buf[:8])
        if jlen < 2 or jlen > MAX_JSON:
            raise ConnectionError("bad reply header (JSON length %d)" % jlen)
        self._fill(8 + jlen + dlen)
        obj = json.loads(bytes(self._buf[8:8 + jlen]))
        data = bytes(self._buf[8 + jlen:8 + jlen + dlen])
        del self._buf[:8 + jlen + dlen]
        if not isinstance(obj, dict):
            raise ConnectionError("reply is not a JSON object")
        rid = obj.get("id")
        if "error" in obj:
            e = obj["error"] or {}
            return rid, Error(e.get("code", "E_?"), e.get("message", ""), rid), data
        return rid, obj.get("result"), data

    def _call(self, method, params=None, payload=b""):
        rid = self._send(method, params, payload)
        got, res, data = self._recv()
        if got != rid:
            raise ConnectionError("reply to id %r while waiting for %d" % (got, rid))
        if isinstance(res, Error):
            raise res
        return res, data

    # ---- methods ----

    def ping(self):
        """{"pong": true, "version", "protocol", "pid", "max_payload", ...}"""
        res, _ = self._call("ping")
        self._limits = res
        return res

    def services(self):
        """[{"id": 1, "name": "encrypt", "summary": ...}, ...]"""
        return self._call("services")[0]["services"]

    def stats(self):
        """Every counter since the daemon started (docs/protocol.md, stats)."""
        return self._call("stats")[0]

    @staticmethod
    def _result(res, data):
        return Result(res.get("service"), res.get("status"), res.get("code"),
                      res.get("latency_us"), data)

    def submit(self, service, data):
        """Run service (a name, or an id) on data (1 byte or more); a Result."""
        res, out = self._call("submit", {"service": service}, bytes(data))
        return self._result(res, out)

    def submit_many(self, requests, window=None):
        """Pipelined submits: requests is an iterable of (service, data).
        Keeps up to window in flight on this one connection (default: the
        daemon's max_inflight_per_conn) and matches the replies, which come
        in any order, by id.  Returns the Results in request order.  An
        error reply raises Error once every reply in flight is read, so the
        connection stays usable; the Error's .index is the failed request's
        position (the first one that failed)."""
        if window is None:
            if self._limits is None:
                self.ping()
            window = self._limits.get("max_inflight_per_conn", 1)
        if window < 1:
            raise ValueError("window must be at least 1")
        pending = {}            # id -> position
        results = []
        first_error = None
        it = iter(requests)
        more = True
        while more or pending:
            while more and len(pending) < window:
                try:
                    service, data = next(it)
                except StopIteration:
                    more = False
                    break
                pending[self._send("submit", {"service": service}, bytes(data))] = len(results)
                results.append(None)
            if not pending:
                break
            rid, res, out = self._recv()
            if rid not in pending:
                raise ConnectionError("reply to an unknown id %r" % (rid,))
            pos = pending.pop(rid)
            if isinstance(res, Error):
                res.index = pos
                if first_error is None or pos < first_error.index:
                    first_error = res
                more = False        # send nothing more; drain what is in flight
            else:
                results[pos] = self._result(res, out)
        if first_error is not None:
            raise first_error
        return results


def main(argv=None):
    """python3 -m hyperamp [--socket PATH] ping|services|stats|submit SERVICE DATA"""
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python3 -m hyperamp", description=main.__doc__)
    p.add_argument("--socket")
    p.add_argument("command", choices=["ping", "services", "stats", "submit"])
    p.add_argument("args", nargs="*")
    a = p.parse_args(argv)
    try:
        with Client(a.socket) as c:
            if a.command == "submit":
                if len(a.args) != 2:
                    p.error("submit takes SERVICE DATA")
                svc = int(a.args[0]) if a.args[0].isdigit() else a.args[0]
                r = c.submit(svc, a.args[1].encode())
                if r.status != "SUCCESS":
                    print(r.status, file=sys.stderr)
                    return 1
                sys.stdout.buffer.write(r.data)
                return 0
            print(json.dumps(getattr(c, a.command)(), indent=2))
            return 0
    except Error as e:
        print("hyperamp: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:
        print("hyperamp: cannot reach hyperampd: %s" % e, file=sys.stderr)
        return 69


if __name__ == "__main__":
    raise SystemExit(main())
