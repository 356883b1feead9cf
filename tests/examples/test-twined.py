#!/usr/bin/python3
"""twined, run as a user runs it: the plugin list, --help, every basic plugin
served and checked with Python's sockets, bad input (one line, exit 2 or 1,
nothing left running), SIGTERM's graceful stop, SIGHUP's log reopening,
systemd's readiness notification and socket activation, --pidfile, and
--workers (a killed worker is started again; SIGTERM stops them all).

Usage: test-twined.py BIN_DIR   (TWINE_REACTOR picks the backend)
With TWINE_VALGRIND=1 twined runs under valgrind's memcheck (its workers do
not) and must exit with no leak and no error."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
TWINED = os.path.join(BIN, "twined")
VALGRIND = os.environ.get("TWINE_VALGRIND") == "1"
TIMEOUT = 60 if VALGRIND else 10
LOCAL = "tcp:0:interface=127.0.0.1"
PLUGINS = ["chargen", "daytime", "discard", "echo", "qotd"]

# A launcher as systemd's socket activation: binds a listening socket, puts
# it at descriptor 3, sets LISTEN_FDS/LISTEN_PID for itself (the pid stays
# across exec) and becomes the command.
ACTIVATE = r"""
import os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 0))
s.listen(50)
print(s.getsockname()[1], flush=True)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execvp(sys.argv[1], sys.argv[1:])
"""


def command(*args):
    cmd = [TWINED, *args]
    if VALGRIND:
        cmd = ["valgrind", "-q", "--leak-check=full", "--error-exitcode=99",
               "--errors-for-leak-kinds=definite,indirect,possible",
               "--show-leak-kinds=definite,indirect,possible"] + cmd
    return cmd


def run(*args, **kw):
    p = subprocess.run(command(*args), capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL, **kw)
    return p.returncode, p.stdout, p.stderr


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def wait_until(cond, timeout=TIMEOUT, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Twined:
    """A running twined, logging JSON lines to its standard output (a pipe:
    JSON is twist's format when the log file is not a terminal), read by a
    thread so the test can wait for a message."""

    def __init__(self, *args, argv=None, env=None, wait_listening=True, **popen):
        self.proc = subprocess.Popen(argv or command(*args), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                     env=env, **popen)
        self.events = []
        self.raw = []
        self.lock = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.ports = []
        if wait_listening:
            ev = self.wait_for(r"listening on")
            with self.lock:
                self.ports = [int(m.group(1)) for e in self.events
                              if (m := re.search(r"listening on [\d.]+:(\d+)", e["message"]))]
            self.port = self.ports[0] if self.ports else None
            del ev

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

    def messages(self):
        with self.lock:
            return [e["message"] for e in self.events]

    def wait_for(self, pattern, count=1, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                hits = [e for e in self.events if re.search(pattern, e["message"])]
                if len(hits) >= count:
                    return hits[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.reader.is_alive()):
                    raise AssertionError(f"no log message like {pattern!r}: {self.raw!r}")
                self.lock.wait(min(left, 0.1))

    def signal(self, signo):
        self.proc.send_signal(signo)

    def finish(self, timeout=TIMEOUT):
        """Waits for the exit; returns (status, stderr)."""
        self.proc.wait(timeout=timeout)
        self.reader.join(timeout)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.proc.returncode, err

    def stop(self):
        self.signal(signal.SIGTERM)
        return self.finish()

    def __del__(self):
        if self.proc.poll() is None:  # a failed test left it running
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f and not f.closed and not self.reader.is_alive():
                f.close()


def connect(port, timeout=TIMEOUT):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_all(s, limit=1 << 20):
    got = b""
    while len(got) < limit:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def echo_once(port, data=b"hello"):
    with connect(port) as s:
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
        return got


def one_line(testcase, err):
    lines = [l for l in err.splitlines() if l.strip()]
    testcase.assertEqual(len(lines), 1, err)
    testcase.assertTrue(lines[0].startswith("twined: "), err)
    return lines[0]


class CommandLine(unittest.TestCase):
    def test_no_plugin_lists_the_plugins(self):
        code, out, err = run()
        self.assertEqual(code, 2, err)
        for name in PLUGINS:
            self.assertRegex(out, rf"\n  {name} +\S")
        self.assertIn("no plugin given", one_line(self, err))

    def test_help(self):
        code, out, err = run("--help")
        self.assertEqual((code, err), (0, ""))
        for option in ("--log-level", "--log-format", "--log-file", "--reactor", "--workers",
                       "--pidfile", "--grace"):
            self.assertIn(option, out)
        self.assertIn("echo", out)
        code, out, err = run("echo", "--help")
        self.assertEqual((code, err), (0, ""))
        self.assertIn("Usage: twined [options] echo", out)
        self.assertIn("--listen ENDPOINT", out)
        self.assertIn("[default: tcp:8007]", out)
        for name in PLUGINS:
            code, out, err = run(name, "--help")
            self.assertEqual(code, 0, err)
            self.assertIn("--listen", out)

    def test_version(self):
        code, out, err = run("--version")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"^twined \d+\.\d+")

    def test_bad_input_is_one_line_and_status_2(self):
        cases = [
            (["nosuch"], "unknown plugin 'nosuch'"),
            (["--bogus", "echo"], "unknown option '--bogus'"),
            (["echo", "--lisen", LOCAL], "echo: unknown option '--lisen'"),
            (["echo", "--listen"], "--listen needs a value"),
            (["echo", "stray"], "unexpected argument 'stray'"),
            (["echo", "--listen", "tpc:1"], "unknown endpoint type"),
            (["echo", "--listen", "tcp:99999"], "out of range"),
            (["--workers", "many", "echo"], "--workers: 'many'"),
            (["--grace", "-1", "echo"], "--grace"),
            (["--log-level", "loud", "echo"], "unknown log level 'loud'"),
            (["--log-format", "xml", "echo"], "--log-format"),
            (["--reactor", "kqueue", "echo"], "unknown reactor 'kqueue'"),
        ]
        for args, why in cases:
            code, out, err = run(*args)
            self.assertEqual(code, 2, f"{args}: {err}")
            self.assertIn(why, one_line(self, err), args)

    def test_log_file_that_cannot_be_opened(self):
        code, out, err = run("--log-file", "/nonexistent-dir/twined.log", "echo", "--listen",
                             LOCAL)
        self.assertEqual(code, 1, err)
        self.assertIn("cannot open '/nonexistent-dir/twined.log'", one_line(self, err))

    def check_port_in_use(self, *launcher):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            with tempfile.TemporaryDirectory() as d:
                pidfile = os.path.join(d, "twined.pid")
                p = subprocess.Popen(command(*launcher, "--pidfile", pidfile, "echo",
                                             "--listen", LOCAL, "--listen",
                                             f"tcp:{port}:interface=127.0.0.1"),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
                out, err = p.communicate(timeout=TIMEOUT)
                self.assertEqual(p.returncode, 1, err)
                line = one_line(self, err)
                self.assertIn(f"127.0.0.1:{port}", line)
                self.assertIn("address already in use", line)
                self.assertFalse(os.path.exists(pidfile), "no pid file left")
                self.assertNotIn("serving", out, "no worker was started")
                # The first --listen had succeeded: it is closed again.
                first = re.search(r"listening on 127.0.0.1:(\d+)", out)
                self.assertIsNone(first, "a half-started tree says nothing")

    def test_port_in_use(self):
        self.check_port_in_use()

    def test_port_in_use_with_workers(self):
        self.check_port_in_use("--workers", "2")

    def test_permission_denied(self):
        # As root, run it as nobody: a port below 1024 is refused.
        drop = (lambda: (os.setgid(65534), os.setuid(65534))) if os.geteuid() == 0 else None
        code, out, err = run("echo", "--listen", "tcp:7:interface=127.0.0.1", preexec_fn=drop)
        self.assertEqual(code, 1, err)
        self.assertIn("permission denied", one_line(self, err))

    def test_unknown_user(self):
        code, out, err = run("--uid", "no-such-user-for-twined", "echo")
        self.assertEqual(code, 2, err)
        self.assertIn("--uid: unknown user 'no-such-user-for-twined'", one_line(self, err))


class Plugins(unittest.TestCase):
    def test_echo_on_two_ports(self):
        t = Twined("echo", "--listen", LOCAL, "--listen", "tcp:0:interface=127.0.0.1:backlog=5")
        t.wait_for("listening on", count=2)
        with t.lock:
            ports = [int(m.group(1)) for e in t.events
                     if (m := re.search(r"listening on [\d.]+:(\d+)", e["message"]))]
        self.assertEqual(len(set(ports)), 2)
        for port in ports:
            self.assertEqual(echo_once(port, b"hello twined"), b"hello twined")
        big = os.urandom(1 << 20)
        self.assertEqual(echo_once(ports[0], big), big)
        code, err = t.stop()
        self.assertEqual(code, 0, err)

    def test_discard(self):
        t = Twined("discard", "--listen", LOCAL)
        with connect(t.port) as s:
            s.sendall(b"x" * 100000)
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(s), b"", "nothing comes back; the end closes it")
        self.assertEqual(t.stop()[0], 0)

    def test_chargen(self):
        t = Twined("chargen", "--listen", LOCAL)
        with connect(t.port) as s:
            got = b""
            while len(got) < 200000:
                got += s.recv(65536)
        lines = got.split(b"\r\n")
        printable = bytes(range(32, 127))
        for i, line in enumerate(lines[:-1]):
            self.assertEqual(len(line), 72)
            start = i % 95
            self.assertEqual(line, (printable * 2)[start:start + 72])
        self.assertEqual(t.stop()[0], 0)

    def test_daytime(self):
        t = Twined("daytime", "--listen", LOCAL)
        with connect(t.port) as s:
            got = recv_all(s).decode()
        self.assertRegex(got, r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\r\n$")
        when = time.strptime(got.strip(), "%a %b %d %H:%M:%S %Y")
        self.assertLess(abs(time.mktime(when) - time.mktime(time.gmtime())), 120)
        self.assertEqual(t.stop()[0], 0)

    def test_qotd(self):
        t = Twined("qotd", "--listen", LOCAL, "--quote", "Simple is better than complex.")
        with connect(t.port) as s:
            self.assertEqual(recv_all(s), b"Simple is better than complex.\r\n")
        self.assertEqual(t.stop()[0], 0)
        t = Twined("qotd", "--listen", LOCAL)
        with connect(t.port) as s:
            self.assertEqual(recv_all(s), b"An apple a day keeps the doctor away.\r\n")
        self.assertEqual(t.stop()[0], 0)

    def test_text_log_and_debug_namespace(self):
        """--log-format text; a namespace's own level shows the echo plugin's
        per-connection lines."""
        t = Twined("--log-format", "json", "--log-level", "warn,twined=info,twined.echo=debug",
                   "echo", "--listen", LOCAL)
        with connect(t.port) as s:
            local = s.getsockname()[1]
            s.sendall(b"x")
            s.recv(1)
            t.wait_for(rf"connection from 127.0.0.1:{local}$")
        self.assertEqual(t.stop()[0], 0)
        p = subprocess.Popen(command("--log-format", "text", "echo", "--listen", LOCAL),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
        line = p.stdout.readline()
        self.assertRegex(line, r"^\d{4}-\d\d-\d\dT[\d:.]+Z \[twined#info\] echo listening on ")
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=TIMEOUT)
        self.assertEqual(p.returncode, 0, err)


class Signals(unittest.TestCase):
    def test_sigterm_lets_open_connections_finish(self):
        t = Twined("--grace", "20", "echo", "--listen", LOCAL)
        client = connect(t.port)
        client.sendall(b"before")
        self.assertEqual(client.recv(100), b"before")
        t.signal(signal.SIGTERM)
        t.wait_for("stopped listening; waiting up to 20 s for 1 open connection")

        def refused():
            try:
                socket.create_connection(("127.0.0.1", t.port), timeout=1).close()
                return False
            except ConnectionRefusedError:
                return True
        wait_until(refused, what="the port to close")
        client.sendall(b"during")
        self.assertEqual(client.recv(100), b"during", "the open connection is still served")
        self.assertIsNone(t.proc.poll())
        client.close()
        start = time.monotonic()
        code, err = t.finish()
        self.assertEqual(code, 0, err)
        self.assertLess(time.monotonic() - start, 5 if not VALGRIND else 30,
                        "exits once the last connection closed, not after the grace")

    def test_grace_ends_and_the_rest_are_closed(self):
        t = Twined("--grace", "0.5", "echo", "--listen", LOCAL)
        client = connect(t.port)
        client.sendall(b"x")
        client.recv(1)
        start = time.monotonic()
        t.signal(signal.SIGTERM)
        code, err = t.finish()
        self.assertEqual(code, 0, err)
        self.assertGreater(time.monotonic() - start, 0.4)
        self.assertIn("grace period over: closing 1 connection(s)", t.messages())
        self.assertEqual(recv_all(client), b"", "closed by twined")
        client.close()

    def test_second_signal_cuts_the_grace_short(self):
        t = Twined("--grace", "30", "echo", "--listen", LOCAL)
        client = connect(t.port)
        t.signal(signal.SIGINT)
        t.wait_for("stopped listening")
        t.signal(signal.SIGINT)
        code, err = t.finish()
        self.assertEqual(code, 0, err)
        client.close()

    def test_sighup_reopens_the_log_file(self):
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "twined.log")
            p = subprocess.Popen(command("--log-file", log, "echo", "--listen", LOCAL),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 stdin=subprocess.DEVNULL)

            def logged(path, what):
                try:
                    with open(path) as f:
                        return what in f.read()
                except FileNotFoundError:
                    return False
            wait_until(lambda: logged(log, "listening on"), what="the first log line")
            os.rename(log, log + ".1")
            p.send_signal(signal.SIGHUP)
            wait_until(lambda: logged(log, "log file reopened"), what="a new log file")
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=TIMEOUT)
            self.assertEqual(p.returncode, 0, err)
            self.assertEqual(out, "", "everything went to the file")
            with open(log + ".1") as f:
                old = [json.loads(l)["message"] for l in f]
            with open(log) as f:
                new = [json.loads(l)["message"] for l in f]
            self.assertTrue(any("listening on" in m for m in old), old)
            self.assertNotIn("stopped", old)
            self.assertIn("stopped", new)
            self.assertFalse(any("listening on" in m for m in new), new)


class Systemd(unittest.TestCase):
    def notify_socket(self, d):
        path = os.path.join(d, "notify")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.settimeout(TIMEOUT)
        return s, path

    def test_ready_and_stopping_notifications(self):
        for launcher in ([], ["--workers", "2"]):
            with tempfile.TemporaryDirectory() as d:
                sock, path = self.notify_socket(d)
                t = Twined(*launcher, "echo", "--listen", LOCAL,
                           env=dict(os.environ, NOTIFY_SOCKET=path))
                self.assertEqual(sock.recv(100), b"READY=1")
                self.assertEqual(echo_once(t.port), b"hello", "ready means serving")
                t.signal(signal.SIGTERM)
                self.assertEqual(sock.recv(100), b"STOPPING=1")
                code, err = t.finish()
                self.assertEqual(code, 0, err)
                sock.close()

    def test_socket_activation(self):
        for launcher in ([], ["--workers", "2"]):
            argv = ["/usr/bin/python3", "-c", ACTIVATE] + command(
                *launcher, "echo", "--listen", "systemd:domain=INET:index=0")
            t = Twined(argv=argv, wait_listening=False)
            ev = t.wait_for(r"listening on 127\.0\.0\.1:\d+ \(systemd:")
            port = int(re.search(r":(\d+) \(", ev["message"]).group(1))
            if launcher:
                t.wait_for(r"worker\(s\) serving")
            for _ in range(4):
                self.assertEqual(echo_once(port), b"hello")
            code, err = t.stop()
            self.assertEqual(code, 0, err)

    def test_systemd_endpoint_without_sockets(self):
        code, out, err = run("echo", "--listen", "systemd:domain=INET:index=0")
        self.assertEqual(code, 1, err)
        self.assertIn("no sockets were passed", one_line(self, err))


def ids(pid):
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    gid = int(re.search(r"^Gid:\s+(\d+)", status, re.M).group(1))
    return uid, gid


@unittest.skipIf(os.geteuid() != 0, "binding a privileged port and changing user need root")
class Privileges(unittest.TestCase):
    """Privileged start: the port below 1024 is bound as root, then twined
    runs as nobody (--uid)."""

    def test_bind_then_drop(self):
        port = 7
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", port))
        except OSError:
            self.skipTest("port 7 is taken on this machine")
        t = Twined("--uid", "65534", "--gid", "65534", "echo", "--listen",
                   f"tcp:{port}:interface=127.0.0.1")
        self.assertEqual(t.port, port)
        t.wait_for("running as uid 65534, gid 65534")
        self.assertEqual(ids(t.proc.pid), (65534, 65534))
        self.assertEqual(echo_once(port), b"hello")
        self.assertEqual(t.stop()[0], 0)

    def test_workers_run_as_the_user(self):
        t = Twined("--workers", "2", "--uid", "65534", "echo", "--listen", LOCAL)
        t.wait_for(r"2 worker\(s\) serving")
        with t.lock:
            pids = [int(m.group(1)) for e in t.events
                    if (m := re.match(r"worker \d started \(pid (\d+)\)", e["message"]))]
        for pid in pids:
            self.assertEqual(ids(pid)[0], 65534)
        self.assertEqual(ids(t.proc.pid)[0], 0, "the supervisor stays root")
        self.assertEqual(echo_once(t.port), b"hello")
        self.assertEqual(t.stop()[0], 0)

    def test_a_worker_that_cannot_start_fails_the_start(self):
        """The workers run as nobody and cannot open root's log file: the
        supervisor stops and exits 1, leaving nothing behind."""
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o700)
            log = os.path.join(d, "twined.log")
            p = subprocess.run(command("--workers", "1", "--uid", "65534", "--log-file", log,
                                       "echo", "--listen", LOCAL),
                               capture_output=True, text=True, timeout=TIMEOUT,
                               stdin=subprocess.DEVNULL)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("cannot open", one_line(self, p.stderr))
            with open(log) as f:
                logged = f.read()
            self.assertIn("exited with code 1 before it could serve: stopping", logged)


class PidFile(unittest.TestCase):
    def test_pidfile(self):
        with tempfile.TemporaryDirectory() as d:
            pidfile = os.path.join(d, "twined.pid")
            t = Twined("--pidfile", pidfile, "echo", "--listen", LOCAL)
            with open(pidfile) as f:
                self.assertEqual(int(f.read()), t.proc.pid)
            code, out, err = run("--pidfile", pidfile, "echo", "--listen", LOCAL)
            self.assertEqual(code, 1, err)
            self.assertIn("names a running process", one_line(self, err))
            self.assertEqual(t.stop()[0], 0)
            self.assertFalse(os.path.exists(pidfile))


class Workers(unittest.TestCase):
    def worker_pids(self, t):
        with t.lock:
            started = {}
            for e in t.events:
                m = re.match(r"worker (\d+) started \(pid (\d+)\)", e["message"])
                if m:
                    started[int(m.group(1))] = int(m.group(2))
            return started

    def test_killed_worker_is_started_again(self):
        t = Twined("--workers", "2", "echo", "--listen", LOCAL)
        t.wait_for(r"2 worker\(s\) serving")
        pids = self.worker_pids(t)
        self.assertEqual(sorted(pids), [1, 2])
        self.assertNotIn(t.proc.pid, pids.values())
        for pid in pids.values():
            fds = os.listdir(f"/proc/{pid}/fd")
            sockets = [fd for fd in fds
                       if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")]
            self.assertEqual(len(sockets), 1, "a worker holds its listening socket only")
        for _ in range(10):
            self.assertEqual(echo_once(t.port), b"hello")
        os.kill(pids[1], signal.SIGKILL)
        t.wait_for(r"worker 1 \(pid \d+\) killed by signal 9.*starting it again in 0\.1 s")
        t.wait_for(r"worker 1 started", count=2)
        t.wait_for(r"worker 1 \(pid \d+\) serving", count=2)
        new = self.worker_pids(t)
        self.assertNotEqual(new[1], pids[1])
        self.assertEqual(new[2], pids[2])
        for _ in range(10):
            self.assertEqual(echo_once(t.port), b"hello")
        code, err = t.stop()
        self.assertEqual(code, 0, err)
        for pid in new.values():
            self.assertFalse(alive(pid), "every worker stopped")

    def test_clients_are_served_while_a_worker_dies(self):
        t = Twined("--workers", "2", "echo", "--listen", LOCAL)
        t.wait_for(r"2 worker\(s\) serving")
        pids = self.worker_pids(t)
        os.kill(pids[2], signal.SIGKILL)
        # The other worker takes every connection meanwhile: the socket's
        # queue is shared, so no connection is refused.
        for _ in range(20):
            self.assertEqual(echo_once(t.port), b"hello")
        t.wait_for(r"worker 2 \(pid \d+\) serving", count=2)
        self.assertEqual(t.stop()[0], 0)

    def test_unix_socket_shared_and_removed(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "echo.sock")
            # A stale socket file, as a crashed server leaves it: taken over.
            with socket.socket(socket.AF_UNIX) as old:
                old.bind(path)
            t = Twined("--workers", "2", "echo", "--listen", f"unix:{path}",
                       wait_listening=False)
            t.wait_for(r"2 worker\(s\) serving")
            for _ in range(6):
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(TIMEOUT)
                    s.connect(path)
                    s.sendall(b"unix")
                    self.assertEqual(s.recv(10), b"unix")
            code, err = t.stop()
            self.assertEqual(code, 0, err)
            self.assertFalse(os.path.exists(path), "the supervisor removed its socket file")

    def test_sigterm_drains_every_worker(self):
        t = Twined("--workers", "2", "--grace", "20", "echo", "--listen", LOCAL)
        t.wait_for(r"2 worker\(s\) serving")
        client = connect(t.port)
        client.sendall(b"ab")
        self.assertEqual(client.recv(10), b"ab")
        t.signal(signal.SIGTERM)
        t.wait_for(r"worker \d \(pid \d+\) exited with code 0")
        client.sendall(b"cd")
        self.assertEqual(client.recv(10), b"cd", "its worker still serves it")
        client.close()
        code, err = t.finish()
        self.assertEqual(code, 0, err)


if __name__ == "__main__":
    unittest.main(verbosity=1)
