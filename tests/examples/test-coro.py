#!/usr/bin/python3
"""The coroutine examples, run as a user runs them against Python servers:
coro-echo-client against an echo server (and one that hangs up early),
coro-fetch against servers that send bytes and close (or reset), and both
against a refused port and bad descriptions.

Usage: test-coro.py BIN_DIR   (TWINE_REACTOR picks the backend)
With TWINE_VALGRIND=1 every Twine program runs under valgrind's memcheck and
must exit with no leak and no error (coroutine stacks are registered with
valgrind, so it stays quiet about the stack switches too)."""
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import unittest

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
VALGRIND = os.environ.get("TWINE_VALGRIND") == "1"
TIMEOUT = 120 if VALGRIND else 20


def command(name, *args):
    cmd = [os.path.join(BIN, name), *args]
    if VALGRIND:
        cmd = ["valgrind", "-q", "--leak-check=full", "--error-exitcode=99",
               "--errors-for-leak-kinds=definite,indirect,possible",
               "--show-leak-kinds=definite,indirect,possible"] + cmd
    return cmd


def run(name, *args):
    p = subprocess.run(command(name, *args), capture_output=True, timeout=TIMEOUT)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


class PyServer:
    """A listening socket on loopback (or a Unix path) with one thread per
    connection running handler(conn); with tls (an ssl.SSLContext), each
    connection is TLS."""

    def __init__(self, handler, family=socket.AF_INET, path=None, tls=None):
        self.tls = tls
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        if family == socket.AF_UNIX:
            self.sock.bind(path)
        else:
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.handler = handler
        self.errors = []
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def accept_loop(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with conn:
                self.handler(conn)
        except (OSError, ssl.SSLError) as e:
            self.errors.append(e)

    def close(self):
        # Wake the accepting thread before closing: a thread blocked in accept
        # on a closed descriptor would keep the old socket listening, and
        # could later accept on whatever socket reuses the descriptor number.
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(timeout=TIMEOUT)
        self.sock.close()


def echo(conn):
    while True:
        data = conn.recv(65536)
        if not data:
            return
        conn.sendall(data)


def echo_once_then_close(conn):
    data = conn.recv(65536)
    conn.sendall(data)


def sender(payload):
    def handler(conn):
        conn.sendall(payload)
    return handler


def resetter(conn):
    conn.sendall(b"partial")
    # Linger on with a zero timeout: close sends a reset instead of a FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()


def refused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once it is closed


class CoroEchoClient(unittest.TestCase):
    def setUp(self):
        self.srv = PyServer(echo)
        self.addCleanup(self.srv.close)

    def test_each_message_is_sent_and_its_echo_printed_in_order(self):
        status, out, err = run("coro-echo-client", f"tcp:127.0.0.1:{self.srv.port}",
                               "hello", "big world", "x")
        self.assertEqual(status, 0, err)
        self.assertEqual(out.decode(), "Connected.\nServer said: hello\nServer said: big world\n"
                         "Server said: x\nConnection closed - goodbye!\n")

    def test_a_host_name_is_resolved(self):
        status, out, err = run("coro-echo-client", f"tcp:localhost:{self.srv.port}", "by name")
        self.assertEqual(status, 0, err)
        self.assertIn(b"Server said: by name\n", out)

    def test_a_long_message_comes_back_whole(self):
        msg = "0123456789abcdef" * 6000  # 96,000 bytes: many reads
        status, out, err = run("coro-echo-client", f"tcp:127.0.0.1:{self.srv.port}", msg, "after")
        self.assertEqual(status, 0, err)
        self.assertIn(("Server said: " + msg + "\n").encode(), out)
        self.assertIn(b"Server said: after\n", out)

    def test_over_a_unix_socket(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "echo.sock")
            srv = PyServer(echo, socket.AF_UNIX, path)
            try:
                status, out, err = run("coro-echo-client", f"unix:{path}", "local")
            finally:
                srv.close()
            self.assertEqual(status, 0, err)
            self.assertIn(b"Server said: local\n", out)


class CoroEchoClientFailures(unittest.TestCase):
    def test_a_refused_port(self):
        status, out, err = run("coro-echo-client", f"tcp:127.0.0.1:{refused_port()}", "hi")
        self.assertEqual(status, 1)
        self.assertEqual(out, b"Connection failed - goodbye!\n")
        self.assertIn("connection refused", err)

    def test_a_bad_description(self):
        status, out, err = run("coro-echo-client", "tcp:127.0.0.1:99999", "hi")
        self.assertEqual(status, 2)
        self.assertIn("out of range", err)

    def test_a_server_that_hangs_up_early(self):
        srv = PyServer(echo_once_then_close)
        self.addCleanup(srv.close)
        status, out, err = run("coro-echo-client", f"tcp:127.0.0.1:{srv.port}", "one", "two")
        self.assertEqual(status, 1, (out, err))
        self.assertIn(b"Server said: one\n", out)
        self.assertNotIn(b"Server said: two", out)
        self.assertIn("ended before the echo of message 2", err)

    def test_usage(self):
        status, _, err = run("coro-echo-client", "tcp:127.0.0.1:9")
        self.assertEqual(status, 2)
        self.assertIn("usage", err)


@unittest.skipUnless(shutil.which("openssl"), "needs the openssl command")
class CoroEchoClientTLS(unittest.TestCase):
    """The same straight-line client over tls: (the stream sits on the TLS
    transport), against Python's ssl module as the server."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory()
        cls.cert = os.path.join(cls.dir.name, "cert.pem")
        cls.key = os.path.join(cls.dir.name, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", cls.key, "-out", cls.cert,
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost"],
                       check=True, capture_output=True)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def setUp(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.srv = PyServer(echo, tls=ctx)
        self.addCleanup(self.srv.close)

    def test_echoes_over_tls(self):
        status, out, err = run("coro-echo-client",
                               f"tls:localhost:{self.srv.port}:trustRoots={self.cert}",
                               "secret", "handshake first")
        self.assertEqual(status, 0, err)
        self.assertEqual(out.decode(), "Connected.\nServer said: secret\n"
                         "Server said: handshake first\nConnection closed - goodbye!\n")

    def test_an_untrusted_server_ends_the_stream_with_a_verify_failure(self):
        # No trustRoots: the system's store does not know this certificate.
        status, out, err = run("coro-echo-client", f"tls:localhost:{self.srv.port}", "hi")
        self.assertEqual(status, 1)
        self.assertNotIn(b"Server said", out)
        self.assertIn("verif", err.lower())


class CoroFetch(unittest.TestCase):
    def test_every_byte_until_the_server_closes(self):
        payload = os.urandom(3 * 1024 * 1024 + 5)
        srv = PyServer(sender(payload))
        self.addCleanup(srv.close)
        status, out, err = run("coro-fetch", f"tcp:127.0.0.1:{srv.port}")
        self.assertEqual(status, 0, err)
        self.assertEqual(len(out), len(payload))
        self.assertEqual(out, payload)
        self.assertRegex(err, r"coro-fetch: %d bytes in \d+\.\d{3} s\n$" % len(payload))

    def test_nothing_sent(self):
        srv = PyServer(sender(b""))
        self.addCleanup(srv.close)
        status, out, err = run("coro-fetch", f"tcp:127.0.0.1:{srv.port}")
        self.assertEqual((status, out), (0, b""), err)
        self.assertIn("coro-fetch: 0 bytes in ", err)

    def test_a_reset_says_why(self):
        srv = PyServer(resetter)
        self.addCleanup(srv.close)
        status, out, err = run("coro-fetch", f"tcp:127.0.0.1:{srv.port}")
        # The reset may arrive before or after the first bytes are read, even
        # before the connection counts as made.
        self.assertEqual(status, 1, err)
        self.assertIn(out, (b"", b"partial"))
        self.assertIn("reset", err)

    def test_a_refused_port(self):
        status, out, err = run("coro-fetch", f"tcp:127.0.0.1:{refused_port()}")
        self.assertEqual((status, out), (1, b""))
        self.assertIn("connection refused", err)

    def test_a_bad_description(self):
        status, out, err = run("coro-fetch", "nope:1")
        self.assertEqual(status, 2)
        self.assertIn("unknown endpoint type", err)


if __name__ == "__main__":
    unittest.main(verbosity=2)
