#!/usr/bin/python3
"""Past one machine: Debian's haproxy in front of two twined echo servers on
loopback, speaking the PROXY protocol to them (send-proxy) and to their
haproxy: endpoints. Clients are served through it; each twined sees the
client's own address (the echo plugin logs it at debug level), not
haproxy's; one twined is killed and clients are still served by the other.

Usage: test-haproxy.py BIN_DIR   (TWINE_REACTOR picks the backend)
With TWINE_VALGRIND=1 the twined processes run under valgrind's memcheck."""
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import unittest

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
# The helpers of test-twined.py (which takes BIN_DIR from its argv too).
sys.argv.insert(1, BIN)
_spec = importlib.util.spec_from_file_location(
    "twined_test", os.path.join(os.path.dirname(os.path.abspath(__file__)), "test-twined.py"))
tt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tt)
HAPROXY = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                      else None)

CONFIG = """
global
    maxconn 200
defaults
    mode tcp
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch
frontend front
    bind 127.0.0.1:{front}
    default_backend twined
backend twined
    balance roundrobin
    server one 127.0.0.1:{one} send-proxy check check-send-proxy inter 200 fall 1 rise 1
    server two 127.0.0.1:{two} send-proxy check check-send-proxy inter 200 fall 1 rise 1
"""
PEER = r"connection from 127\.0\.0\.1:(\d+)$"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@unittest.skipIf(HAPROXY is None, "haproxy is not installed (scripts/install-deps.sh installs it)")
class BehindHAProxy(unittest.TestCase):
    def setUp(self):
        args = ("--log-level", "info,twined.echo=debug", "echo", "--listen",
                "haproxy:tcp:0:interface=127.0.0.1")
        self.twined = [tt.Twined(*args), tt.Twined(*args)]
        self.dir = tempfile.TemporaryDirectory()
        self.front = free_port()
        cfg = os.path.join(self.dir.name, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(front=self.front, one=self.twined[0].port,
                                  two=self.twined[1].port))
        check = subprocess.run([HAPROXY, "-c", "-f", cfg], capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def up():
            try:
                socket.create_connection(("127.0.0.1", self.front), timeout=1).close()
                return True
            except OSError:
                return False
        tt.wait_until(up, what="haproxy to listen")

    def tearDown(self):
        self.haproxy.terminate()
        self.haproxy.communicate(timeout=tt.TIMEOUT)
        for t in self.twined:
            if t.proc.poll() is None:
                code, err = t.stop()
                self.assertEqual(code, 0, err)
        self.dir.cleanup()

    def served(self, data):
        """One client through haproxy: the echo, and the client's port."""
        with tt.connect(self.front) as s:
            s.sendall(data)
            got = b""
            while len(got) < len(data):
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
            return got, s.getsockname()[1]

    def peers(self, t):
        return {int(m.group(1)) for msg in t.messages() if (m := re.search(PEER, msg))}

    def test_clients_served_with_their_addresses_and_through_a_failure(self):
        ports = []
        for i in range(6):
            got, port = self.served(b"hello %d" % i)
            self.assertEqual(got, b"hello %d" % i)
            ports.append(port)
        # Each twined logged the client's own port, which only the PROXY
        # header carried (haproxy connects from ports of its own).
        tt.wait_until(lambda: set(ports) <= self.peers(self.twined[0]) | self.peers(self.twined[1]),
                      what="every client's own port in the logs")
        for t in self.twined:
            self.assertTrue(set(ports) & self.peers(t), "round robin: each served some client")

        victim = self.twined[0]
        victim.proc.kill()
        victim.finish()
        # haproxy's retries and redispatch cover the moment before its check
        # marks the server down: no client notices.
        for i in range(20):
            got, _ = self.served(b"after %d" % i)
            self.assertEqual(got, b"after %d" % i)
        self.assertIsNone(self.twined[1].proc.poll())


if __name__ == "__main__":
    unittest.main(verbosity=1)
