#!/usr/bin/python3
"""twined socks and twined portforward, run as a user runs them: curl as the
SOCKS client (--socks4, --socks4a, --socks5, --socks5-hostname, with and
without a password) fetching from Python's http.server; refused
destinations; a port forwarder carrying 16 MiB up and its digest back over
a half-closed connection; bad input (one line, exit 2). Skipped when twined
or its socks and portforward plugins are not built, or curl is missing.

Usage: test-socks.py BIN_DIR   (TWINE_REACTOR picks the backend)
With TWINE_VALGRIND=1 twined runs under valgrind's memcheck and must exit
with no leak and no error."""
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
TWINED = os.path.join(BIN, "twined")
VALGRIND = os.environ.get("TWINE_VALGRIND") == "1"
TIMEOUT = 90 if VALGRIND else 20
LOCAL = "tcp:0:interface=127.0.0.1"
CURL = shutil.which("curl")
# curl must not take a proxy from the environment.
CURL_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


def command(*args):
    cmd = [TWINED, *args]
    if VALGRIND:
        cmd = ["valgrind", "-q", "--leak-check=full", "--error-exitcode=99",
               "--errors-for-leak-kinds=definite,indirect,possible",
               "--show-leak-kinds=definite,indirect,possible"] + cmd
    return cmd


def have_plugins():
    if not os.access(TWINED, os.X_OK):
        return False
    for name in ("socks", "portforward"):
        p = subprocess.run([TWINED, name, "--help"], capture_output=True, timeout=10,
                           stdin=subprocess.DEVNULL)
        if p.returncode != 0:
            return False
    return True


def setUpModule():
    if not have_plugins():
        raise unittest.SkipTest("twined with the socks and portforward plugins is not built")


class Twined:
    """A running twined logging JSON lines to a pipe, read by a thread."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(command(*args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        self.events = []
        self.raw = []
        self.lock = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        ev = self.wait_for(r"listening on")
        self.port = int(re.search(r"listening on [\d.]+:(\d+)", ev["message"]).group(1))

    def _read(self):
        for line in self.proc.stdout:
            with self.lock:
                self.raw.append(line)
                try:
                    ev = json.loads(line)
                except ValueError:
                    ev = None
                if isinstance(ev, dict):
                    self.events.append(ev)
                self.lock.notify_all()

    def wait_for(self, pattern, count=1, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                hits = [e for e in self.events if re.search(pattern, e.get("message", ""))]
                if len(hits) >= count:
                    return hits[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError(f"no log message like {pattern!r}: {self.raw!r}")
                self.lock.wait(min(left, 0.1))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=TIMEOUT)
        self.reader.join(TIMEOUT)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, err

    def __del__(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class WebSite:
    """Python's http.server on 127.0.0.1, serving a directory with one file."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory()
        self.body = os.urandom(1 << 20)
        with open(os.path.join(self.dir.name, "blob"), "wb") as f:
            f.write(self.body)
        handler = functools.partial(Quiet, directory=self.dir.name)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.dir.cleanup()


def curl(proxy_opt, proxy_port, url, *extra):
    cmd = [CURL, "-sS", "--max-time", str(TIMEOUT), proxy_opt, f"127.0.0.1:{proxy_port}",
           *extra, url]
    p = subprocess.run(cmd, capture_output=True, timeout=TIMEOUT + 5, env=CURL_ENV,
                       stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def one_line(testcase, err):
    lines = [l for l in err.splitlines() if l.strip()]
    testcase.assertEqual(len(lines), 1, err)
    testcase.assertTrue(lines[0].startswith("twined: "), err)
    return lines[0]


@unittest.skipIf(CURL is None, "curl is not installed")
class Socks(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.web = WebSite()

    @classmethod
    def tearDownClass(cls):
        cls.web.close()

    def url(self, host="127.0.0.1"):
        return f"http://{host}:{self.web.port}/blob"

    def stop(self, t):
        code, err = t.stop()
        self.assertEqual(code, 0, err)

    def test_curl_through_every_version(self):
        t = Twined("socks", "--listen", LOCAL, "--allow", "127.0.0.0/8", "--allow", "localhost")
        for opt, host in (("--socks4", "127.0.0.1"), ("--socks4a", "localhost"),
                          ("--socks5", "127.0.0.1"), ("--socks5-hostname", "localhost")):
            code, out, err = curl(opt, t.port, self.url(host))
            self.assertEqual(code, 0, f"{opt}: {err}")
            self.assertEqual(len(out), len(self.web.body), opt)
            self.assertTrue(out == self.web.body, opt)
        t.wait_for(r"-> 'localhost':\d+: connected", count=2)
        self.stop(t)

    def test_refused_destinations(self):
        t = Twined("socks", "--listen", LOCAL, "--allow", "127.0.0.1:1", "--allow",
                   "*.example.invalid")
        for opt in ("--socks4", "--socks5", "--socks5-hostname"):
            code, out, err = curl(opt, t.port, self.url())
            self.assertNotEqual(code, 0, opt)
            self.assertEqual(out, b"")
        t.wait_for(r"denied: not in the allow list", count=3)
        self.stop(t)

    def test_password(self):
        with tempfile.NamedTemporaryFile("w", suffix=".pw") as pw:
            pw.write("alice:in wonderland\n")
            pw.flush()
            t = Twined("socks", "--listen", LOCAL, "--allow", "127.0.0.1",
                       "--credentials", pw.name)
            code, out, err = curl("--socks5", t.port, self.url(), "--proxy-user",
                                  "alice:in wonderland")
            self.assertEqual(code, 0, err)
            self.assertTrue(out == self.web.body)
            code, out, err = curl("--socks5", t.port, self.url(), "--proxy-user", "alice:guess")
            self.assertNotEqual(code, 0)
            t.wait_for(r"authentication failed for user 'alice'")
            code, out, err = curl("--socks4", t.port, self.url())
            self.assertNotEqual(code, 0)
            t.wait_for(r"SOCKS4 refused")
            self.stop(t)
            self.assertFalse(any("wonderland" in line for line in t.raw), "no password logged")

    def test_bad_input_is_one_line(self):
        for args, want in ((["socks"], "--allow is required"),
                           (["socks", "--allow", "10.0.0.0/40"], "prefix length out of range"),
                           (["socks", "--allow", "*", "--connect-timeout", "soon"],
                            "--connect-timeout: 'soon' is not a number of seconds"),
                           (["socks", "--allow", "*", "--credentials", "/nonexistent/pw"],
                            "cannot read '/nonexistent/pw'"),
                           (["portforward"], "--connect is required"),
                           (["portforward", "--connect", "tcp:nowhere"], "--connect: tcp: missing"),
                           (["portforward", "--connect", "tcp:h:1", "--listen", "tpc:80"],
                            "--listen: unknown endpoint type 'tpc'")):
            p = subprocess.run(command(*args), capture_output=True, text=True, timeout=TIMEOUT,
                               stdin=subprocess.DEVNULL)
            self.assertEqual(p.returncode, 2, f"{args}: {p.stderr}")
            self.assertIn(want, one_line(self, p.stderr), args)


class DigestServer(socketserver.ThreadingTCPServer):
    """Reads a connection to its end, then answers with the SHA-256 of what
    it read: only a client that half-closes gets its answer."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                h = hashlib.sha256()
                n = 0
                while True:
                    chunk = self.request.recv(1 << 16)
                    if not chunk:
                        break
                    h.update(chunk)
                    n += len(chunk)
                    if n < (1 << 20):
                        time.sleep(0.001)  # a slow start: the proxy must hold back
                self.request.sendall(f"{n} {h.hexdigest()}".encode())
        super().__init__(("127.0.0.1", 0), Handler)


class PortForward(unittest.TestCase):
    def test_large_upload_and_half_close(self):
        server = DigestServer()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            t = Twined("portforward", "--listen", LOCAL, "--connect",
                       f"tcp:127.0.0.1:{server.server_address[1]}")
            data = os.urandom(16 << 20)
            with socket.create_connection(("127.0.0.1", t.port), timeout=TIMEOUT) as s:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            self.assertEqual(got.decode(), f"{len(data)} {hashlib.sha256(data).hexdigest()}")
            code, err = t.stop()
            self.assertEqual(code, 0, err)
        finally:
            server.shutdown()
            server.server_close()

    @unittest.skipIf(CURL is None, "curl is not installed")
    def test_http_through_the_forwarder(self):
        web = WebSite()
        try:
            t = Twined("portforward", "--listen", LOCAL, "--connect", f"tcp:localhost:{web.port}")
            p = subprocess.run([CURL, "-sS", "--max-time", str(TIMEOUT),
                                f"http://127.0.0.1:{t.port}/blob"], capture_output=True,
                               timeout=TIMEOUT + 5, env=CURL_ENV)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertTrue(p.stdout == web.body)
            code, err = t.stop()
            self.assertEqual(code, 0, err)
        finally:
            web.close()

    def test_nothing_listening_closes_the_client(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()[1]
        probe.close()
        t = Twined("portforward", "--listen", LOCAL, "--connect", f"tcp:127.0.0.1:{dead}")
        with socket.create_connection(("127.0.0.1", t.port), timeout=TIMEOUT) as s:
            s.sendall(b"anyone?")
            self.assertEqual(s.recv(100), b"")
        t.wait_for(rf"cannot connect to tcp:127\.0\.0\.1:{dead}")
        code, err = t.stop()
        self.assertEqual(code, 0, err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
