#!/usr/bin/python3
"""run-cmd and stdio-echo, run as a user runs them: commands that succeed,
fail, write to both streams, get killed or do not exist; stdin from a pipe,
from a file and from /dev/null.

Usage: test-process.py BIN_DIR   (TWINE_REACTOR picks the backend)
With TWINE_VALGRIND=1 every Twine program runs under valgrind's memcheck and
must exit with no leak and no error."""
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BIN = sys.argv.pop(1) if len(sys.argv) > 1 else "build/bin"
VALGRIND = os.environ.get("TWINE_VALGRIND") == "1"
TIMEOUT = 60 if VALGRIND else 10


def command(name, *args):
    cmd = [os.path.join(BIN, name), *args]
    if VALGRIND:
        cmd = ["valgrind", "-q", "--leak-check=full", "--error-exitcode=99",
               "--errors-for-leak-kinds=definite,indirect,possible",
               "--show-leak-kinds=definite,indirect,possible"] + cmd
    return cmd


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


def run(name, *args, **kw):
    kw.setdefault("stdin", subprocess.DEVNULL)
    p = subprocess.run(command(name, *args), capture_output=True, timeout=TIMEOUT, **kw)
    return p.returncode, p.stdout, p.stderr


class RunCmd(unittest.TestCase):
    def test_output_and_exit_code(self):
        code, out, err = run("run-cmd", "sh", "-c", "echo out; echo err >&2; exit 3")
        self.assertEqual(code, 3, err)
        self.assertEqual(out, b"out\n")
        self.assertIn(b"err\n", err)
        self.assertRegex(err, rb"run-cmd: 'sh' \(pid \d+\) exited with code 3\n")

    def test_streams_as_they_come(self):
        """The first line arrives while the command still runs."""
        p = subprocess.Popen(command("run-cmd", "sh", "-c", "echo first; sleep 1; echo second"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
        start = time.monotonic()
        self.assertEqual(p.stdout.readline(), b"first\n")
        self.assertLess(time.monotonic() - start, 0.9 if not VALGRIND else 30)
        out, err = p.communicate(timeout=TIMEOUT)
        p.stdout.close()
        p.stderr.close()
        self.assertEqual(out, b"second\n")
        self.assertEqual(p.returncode, 0, err)

    def test_stdin_is_passed_on(self):
        code, out, err = run("run-cmd", "tr", "a-z", "A-Z", input=b"shout\n", stdin=None)
        self.assertEqual((code, out), (0, b"SHOUT\n"), err)

    def test_large_output(self):
        code, out, err = run("run-cmd", "head", "-c", "3000000", "/dev/zero")
        self.assertEqual(code, 0, err)
        self.assertEqual(len(out), 3000000)

    def test_reader_going_away_stops_the_command(self):
        """As in a shell pipeline: `run-cmd yes | head` ends with SIGPIPE."""
        p = subprocess.Popen(command("run-cmd", "yes"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.assertEqual(p.stdout.read(20), b"y\n" * 10)
        p.stdout.close()
        err = p.stderr.read()
        p.stderr.close()
        p.wait(timeout=TIMEOUT)
        self.assertEqual(p.returncode, 128 + 13, err)
        self.assertRegex(err, rb"'yes' \(pid \d+\) killed by signal 13")

    def test_slow_reader_holds_the_command_back(self):
        """Nothing blocks and nothing piles up: the command waits for us."""
        size = 50_000_000
        p = subprocess.Popen(command("run-cmd", "head", "-c", str(size), "/dev/zero"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL)
        time.sleep(0.5)
        rss_kib = 0
        with open(f"/proc/{p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss_kib = int(line.split()[1])
        got = 0
        while True:
            chunk = p.stdout.read(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        p.stdout.close()
        err = p.stderr.read()
        p.stderr.close()
        p.wait(timeout=TIMEOUT)
        self.assertEqual((p.returncode, got), (0, size), err)
        if not VALGRIND:
            self.assertLess(rss_kib, 16 * 1024, "run-cmd buffered what it could not write")

    def test_killed_command(self):
        code, out, err = run("run-cmd", "sh", "-c", "kill -9 $$")
        self.assertEqual(code, 128 + 9)
        self.assertRegex(err, rb"killed by signal 9")

    def test_sigterm_is_forwarded(self):
        p = subprocess.Popen(command("run-cmd", "sleep", "30"), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        # Once the child runs, run-cmd watches the signal (it watches before
        # it spawns).
        deadline = time.monotonic() + TIMEOUT
        while not children(p.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=TIMEOUT)
        self.assertEqual(p.returncode, 128 + 15, err)
        self.assertIn(b"'sleep'", err)
        self.assertIn(b"killed by signal 15", err)

    def test_missing_command(self):
        code, out, err = run("run-cmd", "no-such-command-for-twine")
        self.assertEqual(code, 127)
        self.assertIn(b"cannot execute 'no-such-command-for-twine'", err)

    def test_usage(self):
        code, out, err = run("run-cmd")
        self.assertEqual(code, 2)
        self.assertIn(b"usage", err)


class StdioEcho(unittest.TestCase):
    def test_pipe(self):
        code, out, err = run("stdio-echo", input=b"one\ntwo\n", stdin=None)
        self.assertEqual(code, 0, err)
        self.assertEqual(out, b"echo: one\necho: two\n")

    def test_file_as_stdin_and_stdout(self):
        lines = b"".join(b"line %d\n" % i for i in range(20000))
        with tempfile.TemporaryFile() as f, tempfile.TemporaryFile() as o:
            f.write(lines)
            f.seek(0)
            p = subprocess.run(command("stdio-echo"), stdin=f, stdout=o,
                               stderr=subprocess.PIPE, timeout=TIMEOUT)
            self.assertEqual(p.returncode, 0, p.stderr)
            o.seek(0)
            got = o.read()
        want = b"".join(b"echo: line %d\n" % i for i in range(20000))
        self.assertEqual(got, want)

    def test_dev_null(self):
        code, out, err = run("stdio-echo")
        self.assertEqual((code, out), (0, b""), err)

    def test_interactive_lines_come_back_one_by_one(self):
        p = subprocess.Popen(command("stdio-echo"), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for word in (b"alpha", b"beta"):
            p.stdin.write(word + b"\n")
            p.stdin.flush()
            self.assertEqual(p.stdout.readline(), b"echo: " + word + b"\n")
        p.stdin.close()
        self.assertEqual(p.stdout.read(), b"")
        p.wait(timeout=TIMEOUT)
        err = p.stderr.read()
        for f in (p.stdout, p.stderr):
            f.close()
        self.assertEqual(p.returncode, 0, err)

    def test_pipeline_through_run_cmd(self):
        """run-cmd running stdio-echo: both examples at once."""
        code, out, err = run("run-cmd", os.path.join(BIN, "stdio-echo"), input=b"x\n",
                             stdin=None)
        self.assertEqual((code, out), (0, b"echo: x\n"), err)


if __name__ == "__main__":
    unittest.main(verbosity=1)
