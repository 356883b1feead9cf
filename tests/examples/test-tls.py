#!/usr/bin/python3
"""echo-server ssl: and echo-client tls: against real TLS peers: the openssl
command (s_client, s_server), Python's ssl module and Twisted's TLS client.
Certificates are made with the openssl command in a temporary directory at
the start (a CA, a server certificate for localhost/127.0.0.1, an expired
one, one for another name, and a certificate from another, untrusted CA).

Usage: test-tls.py BIN_DIR   (TWINE_REACTOR picks the backend)
With TWINE_VALGRIND=1 every Twine program runs under valgrind's memcheck and
must exit with no leak and no error."""
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "twine_examples", os.path.join(os.path.dirname(os.path.abspath(__file__)), "test-examples.py"))
ex = importlib.util.module_from_spec(_spec)
_argv, sys.argv = sys.argv, [sys.argv[0], BIN]
_spec.loader.exec_module(ex)
sys.argv = _argv

TIMEOUT = ex.TIMEOUT
CERTS = None  # the temporary directory


def openssl(*args, cwd=None):
    subprocess.run(["openssl", *args], cwd=cwd or CERTS, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def make_certs(d):
    def key_and_csr(name, cn):
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)

    def sign(name, ca, ext, days="30", extra=()):
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + ext)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", days, "-extfile", f"{name}.ext",
                *extra, cwd=d)

    for ca in ("ca", "evil-ca"):
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "30",
                "-subj", f"/CN=Twine test {ca}", cwd=d)
    local = "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    key_and_csr("server", "localhost")
    sign("server", "ca", local)
    key_and_csr("other", "other.example")
    sign("other", "ca", "subjectAltName=DNS:other.example\n")
    key_and_csr("untrusted", "localhost")
    sign("untrusted", "evil-ca", local)
    # Expired: valid for a day, from two days ago (x509 -not_before needs OpenSSL 3.4;
    # a CA database is the portable way, so use 'openssl ca' with explicit dates).
    key_and_csr("expired", "localhost")
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca=d\n[d]\ndatabase=index.txt\nnew_certs_dir=.\n"
                "serial=serial\ndefault_md=sha256\npolicy=p\ncopy_extensions=none\n"
                "x509_extensions=e\n[p]\ncommonName=supplied\n[e]\nbasicConstraints=CA:FALSE\n"
                + local)
    open(os.path.join(d, "index.txt"), "w").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
            "-in", "expired.csr", "-out", "expired.pem", "-startdate", "20200101000000Z",
            "-enddate", "20200102000000Z", "-notext", cwd=d)
    os.mkdir(os.path.join(d, "roots"))  # Twisted's trustRoots=DIR: every PEM file in it
    shutil.copy(os.path.join(d, "ca.pem"), os.path.join(d, "roots", "ca.pem"))


def path(name):
    return os.path.join(CERTS, name)


def ssl_server(*extra):
    """echo-server ssl: on a free port of 127.0.0.1."""
    return ex.Server("echo-server", f"ssl:0:privateKey={path('server.key')}:"
                     f"certKey={path('server.pem')}:interface=127.0.0.1", "--quiet", *extra)


class SServer:
    """openssl s_server on a free port, echoing each line reversed (-rev), until closed."""

    def __init__(self, cert, key, *extra):
        self.port = ex.free_port()
        self.proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", f"127.0.0.1:{self.port}", "-cert", cert,
             "-key", key, "-rev", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:  # ready once it accepts (it serves on after this probe)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.communicate()[0]


def echo_client(port, message, host="localhost", roots=None):
    roots = roots or path("ca.pem")
    return ex.run("echo-client", f"tls:{host}:{port}:trustRoots={roots}", message)


class EchoServerSsl(unittest.TestCase):
    def test_openssl_s_client_verifies_and_is_echoed(self):
        srv = ssl_server()
        cl = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}",
                               "-CAfile", path("ca.pem"), "-verify_hostname", "localhost",
                               "-verify_return_error"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        cl.stdin.write("hello over tls\n")
        cl.stdin.flush()
        seen, deadline = [], time.time() + TIMEOUT
        while time.time() < deadline:
            ready, _, _ = select.select([cl.stdout], [], [], 0.5)
            line = cl.stdout.readline() if ready else ""
            if ready and not line:
                break
            seen.append(line)
            if line == "hello over tls\n" and any("Verify return code" in x for x in seen):
                break
        cl.kill()
        cl.communicate()
        text = "".join(seen)
        self.assertIn("Verify return code: 0 (ok)", text)
        self.assertIn("\nhello over tls\n", text)
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)

    def test_python_ssl_client_tls13(self):
        srv = ssl_server()
        ctx = ssl.create_default_context(cafile=path("ca.pem"))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                self.assertEqual(s.version(), "TLSv1.3")
                s.sendall(b"x" * 100000)
                got = b""
                while len(got) < 100000:
                    chunk = s.recv(65536)
                    self.assertTrue(chunk, "closed early")
                    got += chunk
                self.assertEqual(got, b"x" * 100000)
                s.unwrap()  # close_notify both ways
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)

    def s_client_session(self, port, extra, steps):
        """openssl s_client -msg to port, fed the lines in steps one at a time
        (a pause after each, so s_client reads each alone: k asks it for a
        KeyUpdate, K for one that requests ours). Returns its whole output."""
        cl = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                               "-CAfile", path("ca.pem"), "-msg", *extra],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        pause = 1.0 if ex.VALGRIND else 0.25
        time.sleep(pause * 2)  # the handshake
        for step in steps:
            cl.stdin.write(step + "\n")
            cl.stdin.flush()
            time.sleep(pause)
        time.sleep(pause * 2)  # the last echo, before stdin's end closes
        return cl.communicate(timeout=TIMEOUT)[0]

    def test_openssl_s_client_each_tls13_suite_with_key_updates(self):
        # The server runs TLS 1.3's record layer itself after the handshake:
        # each suite, several round trips, s_client's KeyUpdate (k) and
        # KeyUpdate asking for ours (K) mid-session.
        srv = ssl_server()
        big = "y" * 6000
        for suite in ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                      "TLS_CHACHA20_POLY1305_SHA256"):
            steps = ["one", "k", "two", big, "K", "three", "K", "four", "five"]
            text = self.s_client_session(srv.port, ["-ciphersuites", suite], steps)
            self.assertIn(f"Cipher is {suite}", text)
            for word in ("one", "two", big, "three", "four", "five"):
                self.assertIn("\n" + word + "\n", text, suite)
            self.assertEqual(text.count(">>> TLS 1.3, Handshake [length 0005], KeyUpdate"), 3,
                             text)
            # Our KeyUpdate answers each K, and only those.
            self.assertEqual(text.count("<<< TLS 1.3, Handshake [length 0005], KeyUpdate"), 2,
                             text)
            self.assertNotIn("fatal", text.lower(), text)
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)

    def test_openssl_s_client_tls12_stays_on_openssl(self):
        srv = ssl_server()
        text = self.s_client_session(srv.port, ["-tls1_2"], ["twelve", "again"])
        self.assertIn("TLSv1.2", text)
        self.assertIn("\ntwelve\n", text)
        self.assertIn("\nagain\n", text)
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)

    def test_python_ssl_client_many_round_trips(self):
        srv = ssl_server()
        ctx = ssl.create_default_context(cafile=path("ca.pem"))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                self.assertEqual(s.version(), "TLSv1.3")
                for n in (1, 2, 500, 16383, 16384, 16385, 70000, 1, 3):
                    data = bytes((i * 7) & 0xFF for i in range(n))
                    s.sendall(data)
                    got = b""
                    while len(got) < n:
                        chunk = s.recv(65536)
                        self.assertTrue(chunk, "closed early")
                        got += chunk
                    self.assertEqual(got, data)
                s.unwrap()
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)

    def test_python_ssl_client_tls12(self):
        srv = ssl_server()
        ctx = ssl.create_default_context(cafile=path("ca.pem"))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                self.assertEqual(s.version(), "TLSv1.2")
                s.sendall(b"twelve")
                self.assertEqual(s.recv(100), b"twelve")
        srv.stop()

    @unittest.skipUnless(ex.HAVE_TWISTED, "python3-twisted is not installed")
    def test_twisted_tls_client(self):
        srv = ssl_server()
        script = f"""
import sys
from twisted.internet import defer, endpoints, protocol, task

class Echo(protocol.Protocol):
    def connectionMade(self):
        self.got = b""
        self.done = defer.Deferred()
        self.transport.write(b"from twisted")
    def dataReceived(self, data):
        self.got += data
        if self.got == b"from twisted":
            self.transport.loseConnection()
    def connectionLost(self, reason):
        self.done.callback(self.got)

@defer.inlineCallbacks
def main(reactor):
    ep = endpoints.clientFromString(reactor, "tls:localhost:{srv.port}:trustRoots={path('roots')}")
    p = yield endpoints.connectProtocol(ep, Echo())
    got = yield p.done
    print("got", got.decode())

task.react(main)
"""
        p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           timeout=TIMEOUT * 2)
        self.assertIn("got from twisted", p.stdout, p.stderr)
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)

    def test_garbage_instead_of_a_client_hello_closes_that_connection_only(self):
        srv = ssl_server()
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            try:
                rest = s.recv(4096)
                while rest and s.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        # Still serving.
        status, out, err = echo_client(srv.port, "still there")
        self.assertEqual(status, 0, err)
        self.assertIn("Server said: still there", out)
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)

    def test_haproxy_ssl_reads_the_proxy_header_then_tls(self):
        srv = ex.Server("echo-server", f"haproxy:ssl:0:privateKey={path('server.key')}:"
                        f"certKey={path('server.pem')}:interface=127.0.0.1")
        ctx = ssl.create_default_context(cafile=path("ca.pem"))
        with socket.create_connection(("127.0.0.1", srv.port), timeout=TIMEOUT) as raw:
            raw.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 4444 443\r\n")
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"behind a proxy")
                self.assertEqual(s.recv(100), b"behind a proxy")
        status, out, err = srv.stop()
        self.assertEqual(status, 0, err)

    def test_missing_key_file_is_a_clear_error(self):
        status, out, err = ex.run("echo-server", "ssl:0:privateKey=/nonexistent/key.pem")
        self.assertNotEqual(status, 0)
        self.assertIn("ssl: ", err)
        self.assertIn("/nonexistent/key.pem", err)

    def test_sslmethod_is_refused(self):
        status, out, err = ex.run("echo-server", "ssl:0:privateKey=k.pem:sslmethod=SSLv23_METHOD")
        self.assertNotEqual(status, 0)
        self.assertIn("not supported", err)


class EchoClientTls(unittest.TestCase):
    def test_talks_to_echo_server_ssl(self):
        srv = ssl_server()
        status, out, err = echo_client(srv.port, "hello, tls")
        self.assertEqual(status, 0, err)
        self.assertIn("Server said: hello, tls", out)
        srv.stop()

    def test_talks_to_openssl_s_server(self):
        peer = SServer(path("server.pem"), path("server.key"))
        status, out, err = echo_client(peer.port, "racecar\n")
        peer.close()
        self.assertEqual(status, 0, err)
        self.assertIn("Server said: racecar", out)

    def refused(self, cert, key, want, host="localhost", extra=()):
        peer = SServer(path(cert), path(key), *extra)
        status, out, err = echo_client(peer.port, "x\n", host=host)
        peer.close()
        self.assertEqual(status, 1, out + err)
        self.assertNotIn("Server said", out)
        self.assertIn(want, err)

    def test_wrong_host_name(self):
        self.refused("other.pem", "other.key", "hostname mismatch")

    def test_expired_certificate(self):
        self.refused("expired.pem", "expired.key", "certificate has expired")

    def test_untrusted_root(self):
        self.refused("untrusted.pem", "untrusted.key", "unable to get local issuer certificate")

    def test_tls10_only_server(self):
        self.refused("server.pem", "server.key", "protocol version",
                     extra=("-tls1", "-cipher", "DEFAULT@SECLEVEL=0"))


def setUpModule():
    global CERTS
    CERTS = tempfile.mkdtemp(prefix="twine-tls-test-")
    make_certs(CERTS)


def tearDownModule():
    shutil.rmtree(CERTS, ignore_errors=True)


if __name__ == "__main__":
    unittest.main(verbosity=2)
