#!/usr/bin/python3
"""The seeds' examples, run as a user runs them, against real peers: Python's
standard library sockets, and Twisted itself (Debian's python3-twisted) as
the client of echo-server and the server of echo-client.

Usage: test-examples.py BIN_DIR   (TWINE_REACTOR picks the backend)
With TWINE_VALGRIND=1 every Twine program runs under valgrind's memcheck and
must exit with no leak and no error."""
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
VALGRIND = os.environ.get("TWINE_VALGRIND") == "1"
TIMEOUT = 60 if VALGRIND else 10

try:
    import twisted  # noqa: F401
    HAVE_TWISTED = True
except ImportError:
    HAVE_TWISTED = False


def command(name, *args):
    cmd = [os.path.join(BIN, name), *args]
    if VALGRIND:
        cmd = ["valgrind", "-q", "--leak-check=full", "--error-exitcode=99",
               "--errors-for-leak-kinds=definite,indirect,possible",
               "--show-leak-kinds=definite,indirect,possible"] + cmd
    return cmd


class Server:
    """A Twine example server, started on a free port; its first line says
    where it listens."""

    def __init__(self, name, *args, argv=None, **popen):
        self.proc = subprocess.Popen(argv or command(name, *args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, **popen)
        line = self.proc.stdout.readline()
        if not line.startswith("Listening on "):
            self.proc.kill()
            out, err = self.proc.communicate()
            raise AssertionError(f"{name} did not start: {line!r} {out!r} {err!r}")
        self.where = line.split()[-1]
        self.port = int(self.where.rsplit(":", 1)[1]) if ":" in self.where else 0

    def __del__(self):
        if self.proc.poll() is None:  # a failed test left it running
            self.proc.kill()
            self.proc.communicate()

    def stop(self):
        """Ctrl-C, as a user stops it; returns (status, stdout, stderr)."""
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=TIMEOUT)
        return self.proc.returncode, out, err


def run(name, *args):
    p = subprocess.run(command(name, *args), capture_output=True, text=True, timeout=TIMEOUT)
    return p.returncode, p.stdout, p.stderr


def talk(port, data, family=socket.AF_INET, host="127.0.0.1", want=None):
    """Connects, sends data, reads until `want` bytes (or end of file)."""
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        s.connect((host, port) if family != socket.AF_UNIX else host)
        s.sendall(data)
        got = b""
        while want != 0 and (want is None or len(got) < want):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EchoServer(unittest.TestCase):
    def test_echoes_and_prints_like_the_seed(self):
        srv = Server("echo-server", "tcp:0:interface=127.0.0.1")
        self.assertEqual(talk(srv.port, b"hello", want=5), b"hello")
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)
        self.assertIn("Connection made.\n", out)
        self.assertIn("Data received: b'hello'\n", out)
        self.assertRegex(out, r"Connection lost: .*connection was closed cleanly\n")

    def test_quiet_prints_nothing_per_connection(self):
        srv = Server("echo-server", "tcp:0:interface=127.0.0.1", "--quiet")
        for _ in range(3):
            self.assertEqual(talk(srv.port, b"x" * 100000, want=100000), b"x" * 100000)
        status, out, err = srv.stop()
        self.assertEqual((status, out), (0, ""), err)

    def test_many_clients_at_once(self):
        srv = Server("echo-server", "tcp:0:interface=127.0.0.1", "--quiet")
        socks = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(50)]
        for i, s in enumerate(socks):
            s.sendall(b"%d;" % i)
        for i, s in enumerate(socks):
            s.settimeout(TIMEOUT)
            self.assertEqual(s.recv(100), b"%d;" % i)
            s.close()
        self.assertEqual(srv.stop()[0], 0)

    def test_unix_socket(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "echo.sock")
            srv = Server("echo-server", f"unix:{path}", "--quiet")
            self.assertEqual(talk(0, b"over unix", socket.AF_UNIX, path, want=9), b"over unix")
            self.assertEqual(srv.stop()[0], 0)
            self.assertFalse(os.path.exists(path), "the socket file is removed at stop")

    def test_ipv6(self):
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", 0))
        except OSError:
            self.skipTest("no ::1 here")
        srv = Server("echo-server", r"tcp6:0:interface=\:\:1", "--quiet")
        self.assertEqual(talk(srv.port, b"v6", socket.AF_INET6, "::1", want=2), b"v6")
        self.assertEqual(srv.stop()[0], 0)

    def test_systemd_socket_activation(self):
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen()
        port = lsock.getsockname()[1]
        fd = lsock.fileno()
        # systemd passes the socket as fd 3 with LISTEN_PID set to the
        # service's own pid: a shell sets it to its pid, then execs.
        argv = ["sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh",
                *command("echo-server", "systemd:domain=INET:index=0", "--quiet")]
        srv = Server("echo-server", argv=argv, preexec_fn=lambda: os.dup2(fd, 3),
                     close_fds=False)
        lsock.close()
        self.assertEqual(srv.port, port)
        self.assertEqual(talk(port, b"activated", want=9), b"activated")
        self.assertEqual(srv.stop()[0], 0)

    def test_bad_endpoint_is_a_clear_error(self):
        status, out, err = run("echo-server", "tpc:80")
        self.assertEqual(status, 2)
        self.assertIn("unknown endpoint type 'tpc'", err)
        status, out, err = run("echo-server", "tcp:70000")
        self.assertEqual(status, 2)
        self.assertIn("port 70000 out of range", err)

    def test_port_in_use_is_a_clear_error(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            status, out, err = run("echo-server", f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(status, 1)
        self.assertIn(f"cannot listen on 127.0.0.1:{port}", err)
        self.assertIn("address already in use", err)

    def test_peer_that_vanishes_mid_stream_does_not_stop_others(self):
        srv = Server("echo-server", "tcp:0:interface=127.0.0.1", "--quiet")
        for _ in range(5):  # reset while the server still writes to it
            s = socket.create_connection(("127.0.0.1", srv.port))
            s.sendall(b"y" * 1000000)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()
        silent = socket.create_connection(("127.0.0.1", srv.port))  # says nothing
        self.assertEqual(talk(srv.port, b"still here", want=10), b"still here")
        silent.close()
        self.assertEqual(srv.stop()[0], 0)


class EchoClient(unittest.TestCase):
    def test_talks_to_echo_server(self):
        srv = Server("echo-server", "tcp:0:interface=127.0.0.1", "--quiet")
        status, out, err = run("echo-client", f"tcp:127.0.0.1:{srv.port}", "hello, world!")
        srv.stop()
        self.assertEqual(status, 0, err)
        self.assertEqual(out, "Server said: hello, world!\nconnection lost\n"
                              "Connection lost - goodbye!\n")

    def test_host_name_is_resolved(self):
        srv = Server("echo-server", "tcp:0:interface=127.0.0.1", "--quiet")
        status, out, err = run("echo-client", f"tcp:localhost:{srv.port}", "by name")
        srv.stop()
        self.assertEqual(status, 0, err)
        self.assertIn("Server said: by name\n", out)

    def test_reports_failed_connection_like_the_seed(self):
        status, out, err = run("echo-client", f"tcp:127.0.0.1:{free_port()}", "anyone?")
        self.assertEqual(status, 1)
        self.assertEqual(out, "Connection failed - goodbye!\n")
        self.assertIn("connection refused", err)

    def test_unknown_host(self):
        status, out, err = run("echo-client", "tcp:no-such-host.invalid:80", "x")
        self.assertEqual(status, 1)
        self.assertIn("Connection failed - goodbye!", out)
        self.assertIn("no-such-host.invalid", err)


class Qotd(unittest.TestCase):
    def test_factory_holds_the_quote(self):
        srv = Server("qotd-server", "tcp:0:interface=127.0.0.1", "Twine is fast")
        self.assertEqual(talk(srv.port, b""), b"Twine is fast\r\n")
        self.assertEqual(srv.stop()[0], 0)

    def test_default_quote(self):
        srv = Server("qotd-server", "tcp:0:interface=127.0.0.1")
        self.assertEqual(talk(srv.port, b""), b"An apple a day keeps the doctor away\r\n")
        self.assertEqual(srv.stop()[0], 0)


class LoggingServer(unittest.TestCase):
    def test_lines_are_appended_and_the_file_closed_at_stop(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "log.txt")
            with open(path, "w") as f:
                f.write("before\n")
            srv = Server("logging-server", "tcp:0:interface=127.0.0.1", path)
            talk(srv.port, b"first line\r\nsecond ", want=0)  # a partial line is not logged
            talk(srv.port, b"line one\r\nline two\r\npartial", want=0)
            with socket.create_connection(("127.0.0.1", srv.port)) as s:
                for ch in b"split\r\n":  # a byte at a time
                    s.send(bytes([ch]))
                    time.sleep(0.005)
            deadline = time.time() + TIMEOUT
            while time.time() < deadline and "split" not in open(path).read():
                time.sleep(0.02)
            status, out, err = srv.stop()
            self.assertEqual(status, 0, err)
            self.assertEqual(open(path).read(),
                             "before\nfirst line\nline one\nline two\nsplit\n")

    def test_endless_line_closes_that_connection_only(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "log.txt")
            srv = Server("logging-server", "tcp:0:interface=127.0.0.1", path)
            other = socket.create_connection(("127.0.0.1", srv.port))
            other.sendall(b"kept\r\n")
            hog = socket.create_connection(("127.0.0.1", srv.port))
            hog.setblocking(False)
            sent, closed = 0, False
            deadline = time.time() + TIMEOUT
            # A line with no end: the server closes once it passes the limit.
            # Send until the window shuts, then look for the end of file (or
            # a reset) the server's close sends.
            while not closed and sent < (64 << 20) and time.time() < deadline:
                try:
                    sent += hog.send(b"z" * 65536)
                    continue
                except BlockingIOError:
                    pass
                except (ConnectionResetError, BrokenPipeError):
                    closed = True
                    break
                readable, _, _ = select.select([hog], [], [], 0.2)
                if readable:
                    try:
                        closed = hog.recv(1) == b""
                    except ConnectionResetError:
                        closed = True
            hog.close()
            self.assertTrue(closed, "the server closed the connection sending an endless line")
            self.assertLess(sent, 64 << 20)
            other.sendall(b"still served\r\n")
            other.close()
            deadline = time.time() + TIMEOUT
            while time.time() < deadline and "still served" not in open(path).read():
                time.sleep(0.02)
            status, out, err = srv.stop()
            self.assertEqual(status, 0, err)
            self.assertEqual(open(path).read(), "kept\nstill served\n")


TWISTED_ECHO_CLIENT = '''
import sys
from twisted.internet import reactor, protocol

class EchoClient(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"hello, world!")
    def dataReceived(self, data):
        print("Server said:", data)
        self.transport.loseConnection()
    def connectionLost(self, reason):
        print("connection lost")

class EchoFactory(protocol.ClientFactory):
    protocol = EchoClient
    def clientConnectionFailed(self, connector, reason):
        print("Connection failed - goodbye!")
        reactor.stop()
    def clientConnectionLost(self, connector, reason):
        print("Connection lost - goodbye!")
        reactor.stop()

reactor.connectTCP("localhost", int(sys.argv[1]), EchoFactory())
reactor.run()
'''

TWISTED_ECHO_SERVER = '''
import sys
from twisted.internet import reactor, protocol, endpoints

class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

class EchoFactory(protocol.Factory):
    def buildProtocol(self, addr):
        return Echo()

def listening(port):
    print(port.getHost().port, flush=True)

endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
    EchoFactory()).addCallback(listening)
reactor.run()
'''


@unittest.skipUnless(HAVE_TWISTED, "python3-twisted is not installed")
class WithTwisted(unittest.TestCase):
    def test_seed_twisted_client_against_echo_server(self):
        srv = Server("echo-server", "tcp:0:interface=127.0.0.1")
        p = subprocess.run(["/usr/bin/python3", "-c", TWISTED_ECHO_CLIENT, str(srv.port)],
                           capture_output=True, text=True, timeout=30)
        status, out, err = srv.stop()
        self.assertEqual(p.stdout, "Server said: b'hello, world!'\nconnection lost\n"
                                   "Connection lost - goodbye!\n", p.stderr)
        self.assertIn("Data received: b'hello, world!'\n", out)

    def test_echo_client_against_twisted_server(self):
        tw = subprocess.Popen(["/usr/bin/python3", "-c", TWISTED_ECHO_SERVER],
                              stdout=subprocess.PIPE, text=True)
        try:
            port = int(tw.stdout.readline())
            status, out, err = run("echo-client", f"tcp:127.0.0.1:{port}", "from Twine")
        finally:
            tw.terminate()
            tw.communicate()
        self.assertEqual(status, 0, err)
        self.assertIn("Server said: from Twine\n", out)


if __name__ == "__main__":
    unittest.main(verbosity=2)
