"""Shared helpers for agentgate's integration tests and the load bench.

Everything here talks to real processes on loopback only:

- PostgresServer: a throwaway PostgreSQL 15 cluster (initdb in a temp dir owned
  by the postgres user, scram-sha-256 for host connections on 127.0.0.1, a
  role `agentgate` with a random password and a database it owns).
- Agentgate: the gateway under test, started from $AGENTGATE_BIN (set by
  ctest) with a generated config, stopped with SIGTERM and required to exit 0.
  AGENTGATE_STANDIN=pgbouncer swaps in pgbouncer (session mode) to validate the
  tests themselves before the gateway exists.
- Pgbouncer, Haproxy: the comparison proxies of the side-by-side bench.
- run_psql / run_pgbench: run the real clients and capture their output.
- Raw wire helpers (startup_message, read_message, error_fields, ...) for tests
  that must send bytes no driver would send.

Imported by sibling test files through sys.path; run with Debian's python
(/usr/bin/python3), which has psycopg2.
"""

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time

PG_BIN = os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOOPBACK = "127.0.0.1"


# --------------------------------------------------------------------------
# Small utilities

def free_port():
    """A TCP port on loopback that was free a moment ago (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _as_postgres_user():
    """PostgreSQL's server binaries refuse to run as root: drop to `postgres`."""
    return os.geteuid() == 0


def _server_cmd(args):
    if _as_postgres_user():
        return ["runuser", "-u", "postgres", "--"] + list(args)
    return list(args)


def _chown_to_postgres(path):
    if _as_postgres_user():
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)


def wait_for_tcp(host, port, timeout_s, proc=None):
    """True once host:port accepts a TCP connection; False on timeout or if proc died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def libpq_dsn(**kw):
    """A libpq keyword/value connection string (values quoted as libpq wants)."""
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        v = str(v).replace("\\", "\\\\").replace("'", "\\'")
        parts.append(f"{k}='{v}'")
    return " ".join(parts)


def client_env(password=None, extra=None):
    """Environment for psql/pgbench: no user psqlrc/service files leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "10"
    env["PSQLRC"] = os.devnull
    env["PGAPPNAME"] = "agentgate-it"
    env["LC_ALL"] = "C.UTF-8"
    if password is not None:
        env["PGPASSWORD"] = password
    if extra:
        env.update(extra)
    return env


def run_psql(dsn, args=(), input=None, password=None, timeout=300, check=False, binary=False):
    """Run psql -X -w against dsn; returns subprocess.CompletedProcess (text unless binary)."""
    cmd = ["psql", "-X", "-w", "-d", dsn] + list(args)
    res = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                         env=client_env(password), text=not binary)
    if check and res.returncode != 0:
        raise AssertionError(f"psql {args!r} failed rc={res.returncode}\n"
                             f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}")
    return res


def run_pgbench(host, port, user, dbname, args=(), password=None, timeout=600, cwd=None,
                taskset_cpus=None):
    """Run pgbench with explicit connection options; returns CompletedProcess (text)."""
    cmd = ["pgbench", "-h", host, "-p", str(port), "-U", user] + list(args) + [dbname]
    if taskset_cpus is not None:
        cmd = ["taskset", "-c", str(taskset_cpus)] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=client_env(password), cwd=cwd)


def process_cpu_seconds(pid):
    """utime+stime of a whole process (all its threads, live and exited), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def process_rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _stop_process(proc, sig=signal.SIGTERM, timeout_s=15):
    """Signal proc and wait; SIGKILL after timeout. Returns (exit code, timed_out)."""
    if proc.poll() is not None:
        return proc.returncode, False
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout_s), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(), True


# --------------------------------------------------------------------------
# PostgreSQL

class PostgresServer:
    """A throwaway PostgreSQL cluster. Use as a context manager.

    Attributes after __enter__: host, port, user, password, database, dsn
    (libpq string for a direct connection), socket_dir, tmpdir.
    """

    def __init__(self, database="agentgate_it", user="agentgate", settings=None,
                 max_connections=100):
        self.host = LOOPBACK
        self.port = None
        self.user = user
        self.password = "pw-" + secrets.token_hex(12)
        self.database = database
        self.settings = dict(settings or {})
        self.max_connections = max_connections
        self.tmpdir = None
        self._started = False

    # The cluster's own superuser is `postgres` over the unix socket (trust).
    @property
    def socket_dir(self):
        return os.path.join(self.tmpdir, "sock")

    @property
    def datadir(self):
        return os.path.join(self.tmpdir, "data")

    def dsn(self, dbname=None, **extra):
        return libpq_dsn(host=self.host, port=self.port, user=self.user,
                         password=self.password, dbname=dbname or self.database,
                         sslmode="disable", **extra)

    def admin_dsn(self, dbname="postgres"):
        return libpq_dsn(host=self.socket_dir, port=self.port, user="postgres", dbname=dbname)

    def __enter__(self):
        self.tmpdir = tempfile.mkdtemp(prefix="agentgate-pg-")
        os.chmod(self.tmpdir, 0o755)
        _chown_to_postgres(self.tmpdir)
        try:
            self._initdb()
            self._start()
            self._bootstrap()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _run_server_tool(self, args, timeout=120):
        res = subprocess.run(_server_cmd(args), capture_output=True, text=True,
                             timeout=timeout, cwd=self.tmpdir)
        if res.returncode != 0:
            raise RuntimeError(f"{args[0]} failed rc={res.returncode}\n{res.stdout}\n{res.stderr}")
        return res

    def _initdb(self):
        self._run_server_tool([
            os.path.join(PG_BIN, "initdb"), "-D", self.datadir, "-U", "postgres",
            "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
            "--locale=C", "--no-sync"])
        os.makedirs(self.socket_dir)
        _chown_to_postgres(self.socket_dir)
        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("local all all trust\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n")

    def _write_conf(self, port):
        conf = {
            "listen_addresses": f"'{LOOPBACK}'",
            "port": str(port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "password_encryption": "'scram-sha-256'",
            "max_connections": str(self.max_connections),
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        conf.update({k: str(v) for k, v in self.settings.items()})
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        with open(path, "w") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")
        _chown_to_postgres(path)

    def _start(self):
        # A free port may be taken between probing and binding: retry a few times.
        last = None
        for _ in range(5):
            port = free_port()
            self._write_conf(port)
            res = subprocess.run(_server_cmd([
                os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir, "-w", "-t", "60",
                "-l", os.path.join(self.tmpdir, "postgres.log"), "start"]),
                capture_output=True, text=True, timeout=90, cwd=self.tmpdir)
            if res.returncode == 0:
                self.port = port
                self._started = True
                return
            last = res.stdout + res.stderr + self.log_tail()
        raise RuntimeError(f"postgres did not start:\n{last}")

    def log_tail(self, n=4000):
        try:
            with open(os.path.join(self.tmpdir, "postgres.log"), errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def admin_sql(self, sql, dbname="postgres"):
        """Run SQL as the cluster superuser over the unix socket; returns stdout."""
        res = run_psql(self.admin_dsn(dbname), ["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
        if res.returncode != 0:
            raise RuntimeError(f"admin sql failed: {sql}\n{res.stderr}")
        return res.stdout

    def _bootstrap(self):
        pw = self.password.replace("'", "''")
        self.admin_sql(f"CREATE ROLE {self.user} LOGIN PASSWORD '{pw}'")
        self.admin_sql(f"CREATE DATABASE {self.database} OWNER {self.user}")

    def connect(self, **kw):
        """A direct psycopg2 connection (imported lazily: the bench does not need it)."""
        import psycopg2
        return psycopg2.connect(self.dsn(), **kw)

    def __exit__(self, *exc):
        if self._started:
            subprocess.run(_server_cmd([os.path.join(PG_BIN, "pg_ctl"), "-D", self.datadir,
                                        "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60)
            self._started = False
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        return False


# --------------------------------------------------------------------------
# The gateway

def agentgate_bin():
    path = os.environ.get("AGENTGATE_BIN") or os.path.join(REPO_ROOT, "build", "bin", "agentgate")
    return path


class GatewayError(AssertionError):
    pass


class Agentgate:
    """agentgate in front of a PostgresServer. Use as a context manager.

    Options: shards, limits (dict for "limits"), io (dict for "io"), extra
    (dict merged into the top level of the config), target_extra (merged into
    the target), upstream_extra (merged into the target's upstream, e.g.
    {"auth_methods": ["md5"]}). The target is client_auth "trust" on
    loopback, written out as the gateway requires. Attributes: host, port, pid, proc, config_path, dsn(), and
    stderr_text() for the gateway's log.

    On exit sends SIGTERM and asserts the gateway exited 0 (expect_clean_exit).
    """

    def __init__(self, server, shards=1, limits=None, io=None, extra=None, target_extra=None,
                 target_name="pg", client_user="agent", binary=None, start_timeout_s=10,
                 expect_clean_exit=True, taskset_cpus=None, upstream_extra=None):
        self.server = server
        self.upstream_extra = upstream_extra or {}
        self.shards = shards
        self.limits = limits
        self.io = io
        self.extra = extra or {}
        self.target_extra = target_extra or {}
        self.target_name = target_name
        self.client_user = client_user
        self.binary = binary or agentgate_bin()
        self.start_timeout_s = start_timeout_s
        self.expect_clean_exit = expect_clean_exit
        self.taskset_cpus = taskset_cpus
        self.host = LOOPBACK
        self.port = None
        self.proc = None
        self.tmpdir = None
        self.exit_code = None
        self._standin = None

    @property
    def pid(self):
        return self._standin.pid if self._standin else self.proc.pid

    def dsn(self, user=None, dbname=None, **extra):
        return libpq_dsn(host=self.host, port=self.port, user=user or self.client_user,
                         dbname=dbname or self.server.database, sslmode="disable", **extra)

    def connect(self, **kw):
        import psycopg2
        return psycopg2.connect(self.dsn(), **kw)

    def config(self):
        target = {
            "name": self.target_name,
            "protocol": "postgres",
            "listen": f"{self.host}:{self.port}",
            "client_auth": "trust",
            "upstream": {
                "host": self.server.host,
                "port": self.server.port,
                "user": self.server.user,
                "password_file": "upstream-password.txt",
                "database": self.server.database,
            },
        }
        target["upstream"].update(self.upstream_extra)
        target.update(self.target_extra)
        cfg = {"shards": self.shards, "targets": [target]}
        if self.limits:
            cfg["limits"] = dict(self.limits)
        if self.io:
            cfg["io"] = dict(self.io)
        cfg.update(self.extra)
        return cfg

    def stderr_text(self):
        try:
            with open(os.path.join(self.tmpdir, "agentgate.stderr"), errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def __enter__(self):
        standin = os.environ.get("AGENTGATE_STANDIN", "")
        if standin:
            if standin != "pgbouncer":
                raise GatewayError(f"unknown AGENTGATE_STANDIN={standin!r} (only 'pgbouncer')")
            self._standin = Pgbouncer(self.server, taskset_cpus=self.taskset_cpus).__enter__()
            self.port = self._standin.port
            return self
        if not os.access(self.binary, os.X_OK):
            raise GatewayError(f"agentgate binary not found at {self.binary} "
                               "(set AGENTGATE_BIN or build build/bin/agentgate)")
        self.tmpdir = tempfile.mkdtemp(prefix="agentgate-gw-")
        pw_path = os.path.join(self.tmpdir, "upstream-password.txt")
        with open(os.open(pw_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(self.server.password + "\n")
        last_err = ""
        for _ in range(3):  # the probed port can be taken in between: retry
            self.port = free_port()
            self.config_path = os.path.join(self.tmpdir, "agentgate.json")
            with open(self.config_path, "w") as f:
                json.dump(self.config(), f, indent=2)
            cmd = [self.binary, "serve", "--config", self.config_path]
            if self.taskset_cpus is not None:
                cmd = ["taskset", "-c", str(self.taskset_cpus)] + cmd
            self._stderr = open(os.path.join(self.tmpdir, "agentgate.stderr"), "w")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._stderr,
                                         stderr=self._stderr, cwd=self.tmpdir)
            if wait_for_tcp(self.host, self.port, self.start_timeout_s, self.proc):
                return self
            code, _ = _stop_process(self.proc, signal.SIGKILL, 5)
            self._stderr.close()
            last_err = self.stderr_text()
            self.proc = None
            if "in use" not in last_err.lower():
                break
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None
        raise GatewayError(f"agentgate did not accept connections on {self.host}:{self.port} "
                           f"within {self.start_timeout_s}s (exit {code}); stderr:\n{last_err}")

    def stop(self):
        """SIGTERM and wait; returns the exit code (SIGKILL after 15 s counts as failure)."""
        if self._standin:
            self._standin.__exit__(None, None, None)
            self.exit_code = 0
            self._standin = None
            return 0
        if self.proc is None:
            return self.exit_code
        code, timed_out = _stop_process(self.proc, signal.SIGTERM, 15)
        self._stderr.close()
        self.exit_code = None if timed_out else code
        self.proc = None
        return self.exit_code

    def alive(self):
        if self._standin:
            return self._standin.proc.poll() is None
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self):
        """Raise with the gateway's stderr if it has died (e.g. a sanitizer abort)."""
        if not self.alive():
            code = self.proc.poll() if self.proc else None
            raise GatewayError(f"agentgate died (exit {code}); stderr:\n{self.stderr_text()[-8000:]}")

    def __exit__(self, exc_type, exc, tb):
        standin = self._standin is not None
        was_running = self.alive()
        code = self.stop()
        log = self.stderr_text()
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        if exc_type is None and self.expect_clean_exit and not standin:
            why = None
            if not was_running:
                why = f"had already exited (code {code}) before SIGTERM"
            elif code is None:
                why = "did not exit within 15 s of SIGTERM"
            elif code != 0:
                why = f"exited with code {code} after SIGTERM (expected 0)"
            if why:
                raise GatewayError(f"agentgate {why}; stderr:\n{log[-8000:]}")
        return False


# --------------------------------------------------------------------------
# Comparison proxies

class Pgbouncer:
    """pgbouncer in session mode, any client user, logging in upstream itself."""

    def __init__(self, server, pool_size=40, taskset_cpus=None):
        self.server = server
        self.pool_size = pool_size
        self.taskset_cpus = taskset_cpus
        self.host = LOOPBACK
        self.port = None
        self.proc = None
        self.tmpdir = None

    @property
    def pid(self):
        return self.proc.pid

    def __enter__(self):
        self.tmpdir = tempfile.mkdtemp(prefix="agentgate-pgb-")
        os.chmod(self.tmpdir, 0o755)
        s = self.server
        last = ""
        for _ in range(3):
            self.port = free_port()
            ini = os.path.join(self.tmpdir, "pgbouncer.ini")
            with open(ini, "w") as f:
                f.write(
                    "[databases]\n"
                    f"* = host={s.host} port={s.port} user={s.user} password={s.password}\n"
                    "[pgbouncer]\n"
                    f"listen_addr = {self.host}\n"
                    f"listen_port = {self.port}\n"
                    "unix_socket_dir =\n"
                    "auth_type = any\n"
                    "pool_mode = session\n"
                    "max_client_conn = 200\n"
                    f"default_pool_size = {self.pool_size}\n"
                    "ignore_startup_parameters = extra_float_digits,options\n"
                    "log_connections = 0\nlog_disconnections = 0\n"
                    "server_tls_sslmode = disable\n")
            os.chmod(ini, 0o644)
            cmd = ["pgbouncer"]
            if os.geteuid() == 0:
                cmd += ["-u", "postgres"]  # pgbouncer refuses to run as root
            cmd += [ini]
            if self.taskset_cpus is not None:
                cmd = ["taskset", "-c", str(self.taskset_cpus)] + cmd
            self._log = open(os.path.join(self.tmpdir, "pgbouncer.log"), "w")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=self._log, cwd=self.tmpdir)
            if wait_for_tcp(self.host, self.port, 10, self.proc):
                return self
            _stop_process(self.proc, signal.SIGKILL, 5)
            self._log.close()
            with open(os.path.join(self.tmpdir, "pgbouncer.log")) as f:
                last = f.read()
        self.__exit__(None, None, None)
        raise RuntimeError(f"pgbouncer did not start:\n{last}")

    def __exit__(self, *exc):
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, 10)
            self._log.close()
            self.proc = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        return False


class Haproxy:
    """haproxy in TCP mode (layer 4 relay) with nbthread threads."""

    def __init__(self, server, nbthread=2, taskset_cpus=None):
        self.server = server
        self.nbthread = nbthread
        self.taskset_cpus = taskset_cpus
        self.host = LOOPBACK
        self.port = None
        self.proc = None
        self.tmpdir = None

    @property
    def pid(self):
        return self.proc.pid

    def __enter__(self):
        self.tmpdir = tempfile.mkdtemp(prefix="agentgate-hap-")
        last = ""
        for _ in range(3):
            self.port = free_port()
            cfg = os.path.join(self.tmpdir, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write(
                    "global\n"
                    f"  nbthread {self.nbthread}\n"
                    "  maxconn 1000\n"
                    "defaults\n"
                    "  mode tcp\n"
                    "  timeout connect 5s\n"
                    "  timeout client 1h\n"
                    "  timeout server 1h\n"
                    "frontend pg\n"
                    f"  bind {self.host}:{self.port}\n"
                    "  default_backend pg\n"
                    "backend pg\n"
                    f"  server pg {self.server.host}:{self.server.port}\n")
            cmd = ["haproxy", "-db", "-f", cfg]
            if self.taskset_cpus is not None:
                cmd = ["taskset", "-c", str(self.taskset_cpus)] + cmd
            self._log = open(os.path.join(self.tmpdir, "haproxy.log"), "w")
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=self._log, cwd=self.tmpdir)
            if wait_for_tcp(self.host, self.port, 10, self.proc):
                return self
            _stop_process(self.proc, signal.SIGKILL, 5)
            self._log.close()
            with open(os.path.join(self.tmpdir, "haproxy.log")) as f:
                last = f.read()
        self.__exit__(None, None, None)
        raise RuntimeError(f"haproxy did not start:\n{last}")

    def __exit__(self, *exc):
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, 10)
            self._log.close()
            self.proc = None
        if self.tmpdir:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
        return False


# --------------------------------------------------------------------------
# Raw PostgreSQL wire protocol (v3), for tests that must misbehave on purpose

PROTOCOL_V3 = 3 << 16
SSL_REQUEST_CODE = 80877103
CANCEL_REQUEST_CODE = 80877102
GSSENC_REQUEST_CODE = 80877104


def startup_message(user, database, protocol=PROTOCOL_V3, **params):
    body = struct.pack("!I", protocol)
    for k, v in [("user", user), ("database", database)] + list(params.items()):
        body += k.encode() + b"\0" + str(v).encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def ssl_request():
    return struct.pack("!II", 8, SSL_REQUEST_CODE)


def cancel_request(pid, key):
    return struct.pack("!IIII", 16, CANCEL_REQUEST_CODE, pid, key)


def frame(type_byte, body):
    """A regular message: type byte, int32 length (self-inclusive), body."""
    if isinstance(type_byte, str):
        type_byte = type_byte.encode()
    return type_byte + struct.pack("!I", len(body) + 4) + body


def query_message(sql):
    return frame(b"Q", sql.encode() + b"\0")


TERMINATE = frame(b"X", b"")


class WireReader:
    """Reads whole backend messages from a socket, with a buffer.

    Backend messages are assumed well formed (the peer is the gateway under
    test or PostgreSQL); lengths are bounds checked anyway.
    """

    def __init__(self, sock, chunk=1 << 16):
        self.sock = sock
        self.buf = bytearray()
        self.pos = 0
        self.chunk = chunk
        self.eof = False

    def _fill(self):
        if self.pos and self.pos > len(self.buf) // 2:
            del self.buf[:self.pos]
            self.pos = 0
        data = self.sock.recv(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _need(self, n):
        """True once n unread bytes are buffered; False at EOF. May move self.pos."""
        while len(self.buf) - self.pos < n:
            if not self._fill():
                return False
        return True

    def read_byte(self):
        if not self._need(1):
            return None
        b = bytes(self.buf[self.pos:self.pos + 1])
        self.pos += 1
        return b

    def _next(self, counts=None):
        if not self._need(5):
            return None
        t = chr(self.buf[self.pos])
        (length,) = struct.unpack_from("!I", self.buf, self.pos + 1)
        if length < 4 or length > (1 << 30):
            raise AssertionError(f"bad backend message length {length} for type {t!r}")
        if not self._need(1 + length):
            return None
        start = self.pos + 5
        end = self.pos + 1 + length
        self.pos = end
        if counts is not None:
            counts[t] = counts.get(t, 0) + 1
            if t == "D":
                return t, None
        return t, bytes(self.buf[start:end])

    def read_message(self):
        """(type char, body bytes), or None at EOF before a whole message."""
        return self._next()

    def skip_message_counting(self, counts):
        """Like read_message but counts message types in counts; DataRow ('D')
        bodies are not copied (returned as None), to stream big results cheaply."""
        return self._next(counts)

    def read_until_eof(self, timeout_s=10):
        """All remaining messages until the peer closes; raises on timeout."""
        self.sock.settimeout(timeout_s)
        msgs = []
        while True:
            m = self.read_message()
            if m is None:
                if len(self.buf) - self.pos:
                    msgs.append(("<partial>", bytes(self.buf[self.pos:])))
                return msgs
            msgs.append(m)


def error_fields(body):
    """Fields of an ErrorResponse/NoticeResponse body: {'S': ..., 'C': ..., 'M': ...}."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def raw_connect(host, port, timeout_s=10, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout_s)
    s.connect((host, port))
    return s


def raw_login(host, port, user="agent", database="postgres", timeout_s=10, rcvbuf=None):
    """Connect, send a v3 StartupMessage (no password: trust), read until ReadyForQuery.

    Returns (socket, WireReader, backend_key (pid, key) or None).
    """
    s = raw_connect(host, port, timeout_s, rcvbuf)
    s.sendall(startup_message(user, database))
    r = WireReader(s)
    key = None
    while True:
        m = r.read_message()
        if m is None:
            s.close()
            raise AssertionError("connection closed during login")
        t, body = m
        if t == "E":
            s.close()
            raise AssertionError(f"login failed: {error_fields(body)}")
        if t == "R":
            (code,) = struct.unpack_from("!I", body)
            if code != 0:
                s.close()
                raise AssertionError(f"login asked for authentication (code {code}): "
                                     "expected trust")
        if t == "K":
            key = struct.unpack("!II", body)
        if t == "Z":
            return s, r, key


# --------------------------------------------------------------------------
# unittest glue

import contextlib  # noqa: E402
import unittest  # noqa: E402


class GatewayTestCase(unittest.TestCase):
    """One PostgreSQL and one gateway per test class.

    Subclasses set gateway_options (kwargs for Agentgate) and may override
    prepare_database(cls) to load data before the gateway starts.
    Attributes: cls.pg (PostgresServer), cls.gw (Agentgate).
    """

    gateway_options = {}
    server_options = {}

    @classmethod
    def setUpClass(cls):
        cls._stack = contextlib.ExitStack()
        try:
            cls.pg = cls._stack.enter_context(PostgresServer(**cls.server_options))
            cls.prepare_database()
            cls.gw = cls._stack.enter_context(Agentgate(cls.pg, **cls.gateway_options))
        except BaseException:
            cls._stack.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls._stack.close()  # raises if the gateway did not exit 0 on SIGTERM

    @classmethod
    def prepare_database(cls):
        pass

    def setUp(self):
        self.gw.assert_alive()

    # psql through the gateway and directly
    def psql_gw(self, args, **kw):
        return run_psql(self.gw.dsn(), args, **kw)

    def psql_direct(self, args, **kw):
        return run_psql(self.pg.dsn(), args, password=self.pg.password, **kw)

    def assert_same_output(self, gw, direct, what=""):
        """Same exit code, stdout and stderr through the gateway as directly."""
        self.assertEqual(direct.returncode, gw.returncode,
                         f"{what}: exit code differs\n--- direct stderr:\n{direct.stderr}\n"
                         f"--- gateway stderr:\n{gw.stderr}\n--- gateway log:\n"
                         f"{self.gw.stderr_text()[-4000:]}")
        self.assertEqual(direct.stdout, gw.stdout, f"{what}: stdout differs")
        self.assertEqual(direct.stderr, gw.stderr, f"{what}: stderr differs")


def class_temp_dir(cls, prefix):
    """A temporary directory, removed once cls's tearDownClass has stopped the
    gateway (or its setUpClass failed)."""
    path = tempfile.mkdtemp(prefix=prefix)
    cls.addClassCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def admin_setup(cls, prefix, policy=None):
    """The config API (and a policy file) for a GatewayTestCase, before its
    setUpClass: sets cls.dir (a class_temp_dir), cls.admin_token and
    cls.admin_port, and returns the gateway config's "extra" entries: "admin"
    and, given policy (a document, or a function of cls.dir that returns one),
    "policy_file"."""
    cls.dir = class_temp_dir(cls, prefix)
    cls.admin_token = secrets.token_hex(16)
    cls.admin_port = free_port()
    token_file = os.path.join(cls.dir, "admin-token")
    with open(token_file, "w") as f:
        f.write(cls.admin_token + "\n")
    extra = {"admin": {"listen": f"127.0.0.1:{cls.admin_port}", "token_file": token_file}}
    if policy is not None:
        policy_file = os.path.join(cls.dir, "policy.json")
        with open(policy_file, "w") as f:
            json.dump(policy(cls.dir) if callable(policy) else policy, f)
        extra["policy_file"] = policy_file
    return extra


def main():
    """unittest.main with verbose output; exits non-zero on any failure."""
    unittest.main(verbosity=2)
