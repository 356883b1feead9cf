#!/usr/bin/python3
"""A Twine program run under valgrind with no backend named (TWINE_REACTOR
unset, no option) still stops on SIGTERM and SIGINT: valgrind cannot
interrupt io_uring's wait with a signal, so the reactor picks epoll there.
The program must exit cleanly, within a bound, and valgrind must report no
error and no leak.

Usage: test-valgrind-signals.py BIN_DIR"""
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
START_TIMEOUT = 120  # valgrind starts slowly on a loaded machine
EXIT_TIMEOUT = 30

VALGRIND = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--show-leak-kinds=definite,indirect,possible"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """echo-server under valgrind, on a free port, with the environment
    naming no backend. Its output is read as it comes (into `out`)."""

    def __init__(self):
        env = dict(os.environ)
        env.pop("TWINE_REACTOR", None)
        self.port = free_port()
        self.proc = subprocess.Popen(VALGRIND + [os.path.join(BIN, "echo-server"),
                                                 f"tcp:{self.port}:interface=127.0.0.1"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.fd = self.proc.stdout.fileno()
        self.out = b""

    def read(self, timeout):
        """Waits up to timeout for output; returns whether some came. End of
        file raises: the server is gone."""
        if not select.select([self.fd], [], [], max(timeout, 0))[0]:
            return False
        chunk = os.read(self.fd, 65536)
        if not chunk:
            raise AssertionError(f"echo-server exited early ({self.proc.wait()}): "
                                 f"{self.proc.stderr.read()!r}")
        self.out += chunk
        return True

    def reap(self):
        if self.proc.poll() is None:  # a failed test left it running
            self.proc.kill()
        self.proc.communicate()


@unittest.skipUnless(shutil.which("valgrind"), "valgrind not installed")
class SignalsUnderValgrind(unittest.TestCase):
    def start_echo_server(self):
        """Returns the server once it echoes: its loop is running, so its
        SIGINT and SIGTERM handling is in place."""
        srv = Server()
        self.addCleanup(srv.reap)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
                    s.settimeout(START_TIMEOUT)
                    s.sendall(b"ping")
                    got = b""
                    while len(got) < 4:
                        chunk = s.recv(4 - len(got))
                        if not chunk:
                            break
                        got += chunk
                    self.assertEqual(got, b"ping")
                    return srv
            except ConnectionRefusedError:
                pass
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(f"echo-server did not listen within {START_TIMEOUT} s")
            # Not listening yet: connect again when it prints (its
            # "Listening on" line) or a moment has passed.
            srv.read(min(left, 0.1))

    def wait_for_output(self, srv, text):
        deadline = time.monotonic() + START_TIMEOUT
        while text not in srv.out:
            if not srv.read(deadline - time.monotonic()):
                self.fail(f"echo-server did not print {text!r} within {START_TIMEOUT} s")

    def wait_until_asleep(self, srv):
        """Returns once the server has been seen asleep twice, 0.1 s apart,
        without being scheduled or printing in between (the kernel gives no
        event for that, so this looks). Its main thread runs the loop."""
        def sample():
            with open(f"/proc/{srv.proc.pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            return (fields["State"].split()[0], fields["voluntary_ctxt_switches"].strip(),
                    fields["nonvoluntary_ctxt_switches"].strip())
        deadline = time.monotonic() + START_TIMEOUT
        before = sample()
        while time.monotonic() < deadline:
            if srv.read(0.1):  # it printed: not idle
                before = sample()
                continue
            now = sample()
            if now == before and now[0] == "S":
                return
            before = now
        self.fail(f"echo-server did not go idle within {START_TIMEOUT} s")

    def check_stops_on(self, signo):
        srv = self.start_echo_server()
        # The signal must find the loop waiting idle, with nothing but the
        # signal to wake it: the connection is closed, the server has said
        # so, and it has gone to sleep and stayed asleep.
        self.wait_for_output(srv, b"Connection lost: ")
        self.wait_until_asleep(srv)
        srv.proc.send_signal(signo)
        try:
            _, err = srv.proc.communicate(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            srv.proc.kill()
            srv.proc.communicate()
            self.fail(f"echo-server under valgrind ignored {signo.name}: still running "
                      f"{EXIT_TIMEOUT} s later (killed)")
        err = err.decode(errors="replace")
        self.assertNotEqual(srv.proc.returncode, 99, f"valgrind reported errors:\n{err}")
        self.assertEqual(srv.proc.returncode, 0, err)
        self.assertNotRegex(err, r"(?m)^==\d+==", "valgrind reported something")

    def test_sigterm_stops_it(self):
        self.check_stops_on(signal.SIGTERM)

    def test_sigint_stops_it(self):
        self.check_stops_on(signal.SIGINT)


if __name__ == "__main__":
    unittest.main(verbosity=2)
