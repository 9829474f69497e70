"""Helpers for the end-to-end tests of `mishards node`: starting and killing node processes, a pymilvus
client whose every call has a deadline, NumPy brute-force search, and assertions on Milvus statuses.

Every wait here is bounded in time; every process started is registered so it can be killed."""

import inspect
import itertools
import json
import os
import pathlib
import queue
import re
import signal
import sqlite3
import subprocess
import threading
import time
import uuid

import grpc
import numpy as np

from milvus import Milvus, Status
from milvus.grpc_gen import milvus_pb2  # also used by the tests, as h.milvus_pb2

# Seconds. Node start-up (first stdout line), one RPC, a polling wait.
START_TIMEOUT = float(os.environ.get("MISHARDS_E2E_START_TIMEOUT", "30"))
RPC_TIMEOUT = float(os.environ.get("MISHARDS_E2E_RPC_TIMEOUT", "30"))
POLL_TIMEOUT = float(os.environ.get("MISHARDS_E2E_POLL_TIMEOUT", "15"))

LISTENING = re.compile(r"^listening on 127\.0\.0\.1:(\d+)$")

# The Milvus 1.1 ErrorCode values the tests assert on (status.proto).
SUCCESS = Status.SUCCESS
UNEXPECTED_ERROR = Status.UNEXPECTED_ERROR  # 1
PERMISSION_DENIED = Status.PERMISSION_DENIED  # 3
COLLECTION_NOT_EXISTS = Status.COLLECTION_NOT_EXISTS  # 4
ILLEGAL_ARGUMENT = Status.ILLEGAL_ARGUMENT  # 5
ILLEGAL_DIMENSION = Status.ILLEGAL_DIMENSION  # 7
ILLEGAL_INDEX_TYPE = Status.ILLEGAL_INDEX_TYPE  # 8
ILLEGAL_COLLECTION_NAME = Status.ILLEGAL_COLLECTION_NAME  # 9
ILLEGAL_TOPK = Status.ILLEGAL_TOPK  # 10
ILLEGAL_ROWRECORD = Status.ILLEGAL_ROWRECORD  # 11
ILLEGAL_VECTOR_ID = Status.ILLEGAL_VECTOR_ID  # 12
ILLEGAL_NLIST = Status.ILLEGAL_NLIST  # 22
ILLEGAL_METRIC_TYPE = Status.ILLEGAL_METRIC_TYPE  # 23

# A refusal on a read node must say why: read-only, or the node's role.
READ_ONLY_WORDS = re.compile(r"read[\s_-]*only|readonly|\brole\b|\bro\b|read node|reader", re.IGNORECASE)

_names = itertools.count()


def unique_name(prefix="c"):
    """A collection name no other test uses (letters, digits, underscore; starts with a letter)."""
    return "{}_{}_{}".format(prefix, next(_names), uuid.uuid4().hex[:8])


# --------------------------------------------------------------------------------------------------------
# Node processes
# --------------------------------------------------------------------------------------------------------

# Every node process ever started by this test run; the watchdog and the session finalizer kill them.
ALL_NODES = []
_all_nodes_lock = threading.Lock()


# Settings a developer's environment could carry that would point the node elsewhere than the flags say
# (another metadata database, a config file, another version string).
SCRUBBED_ENV = {
    "MISHARDS_CONFIG", "SQLALCHEMY_DATABASE_URI", "MISHARDS_NODE_VERSION", "MISHARDS_ROLE", "MISHARDS_STORAGE",
    "MISHARDS_DATA_DIR", "SERVER_PORT", "MISHARDS_HOST", "LOG_PATH", "TRACER_CLASS_NAME", "SQL_ECHO",
}


class NodeStartError(RuntimeError):
    pass


class Node:
    """One `mishards node` process bound to 127.0.0.1 on a port the OS picks."""

    def __init__(self, binary, role, storage, log_dir, auto_flush_interval=None, extra_args=()):
        self.binary = str(binary)
        self.role = role
        self.storage = pathlib.Path(storage)
        self.auto_flush_interval = auto_flush_interval
        self.extra_args = list(extra_args)
        self.log_dir = pathlib.Path(log_dir)
        self.proc = None
        self.port = None
        self.log_path = None
        self.extra_stdout = []
        self._clients = []
        self._generation = 0

    # -- lifecycle ---------------------------------------------------------------------------------------

    def args(self):
        args = [self.binary, "node", "--role", self.role, "--host", "127.0.0.1", "--port", "0",
                "--storage", str(self.storage)]
        if self.auto_flush_interval is not None:
            args += ["--auto-flush-interval", str(self.auto_flush_interval)]
        return args + self.extra_args

    def start(self, timeout=START_TIMEOUT):
        """Starts the process and waits (bounded) for its one stdout line `listening on 127.0.0.1:PORT`."""
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        self._generation += 1
        self.storage.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_dir / "node-{}-{}-{}.stderr.log".format(
            self.role, uuid.uuid4().hex[:6], self._generation)
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV and "AUTO_FLUSH" not in k}
        env.setdefault("RUST_BACKTRACE", "1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=log, env=env, start_new_session=True)
        with _all_nodes_lock:
            if self not in ALL_NODES:
                ALL_NODES.append(self)

        lines = queue.Queue()
        proc = self.proc

        def read_stdout():
            first = True
            for raw in iter(proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if first:
                    lines.put(line)
                    first = False
                else:
                    self.extra_stdout.append(line)
            if first:
                lines.put(None)  # EOF before any line

        threading.Thread(target=read_stdout, name="node-stdout", daemon=True).start()
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise NodeStartError("node did not print its listening line within {:.0f} s: {}\n{}".format(
                timeout, " ".join(self.args()), self.log_tail()))
        if line is None:
            code = self.wait(timeout=5)
            raise NodeStartError("node exited (code {}) before printing its listening line: {}\n{}".format(
                code, " ".join(self.args()), self.log_tail()))
        m = LISTENING.match(line)
        if not m:
            self.kill()
            raise NodeStartError("node's first stdout line is {!r}, expected 'listening on 127.0.0.1:PORT'\n{}"
                                 .format(line, self.log_tail()))
        self.port = int(m.group(1))
        assert 0 < self.port < 65536
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout=10):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self):
        """`kill -9` of this node (and of its own process group, which only it leads), then reaps it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                try:
                    self.proc.kill()
                except ProcessLookupError:
                    pass
        self.wait(timeout=10)
        self._close_clients()

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.terminate()
            except ProcessLookupError:
                pass
            if self.wait(timeout=10) is None:
                self.kill()
        self._close_clients()

    def restart(self):
        self.kill()
        return self.start()

    def log_tail(self, lines=60):
        if not self.log_path or not self.log_path.exists():
            return "(no stderr log)"
        text = self.log_path.read_text("utf-8", "replace").splitlines()
        tail = "\n".join(text[-lines:])
        return "--- stderr of {} (last {} lines, {}) ---\n{}".format(self.describe(), lines, self.log_path, tail)

    def describe(self):
        state = "running" if self.alive() else "exited {}".format(None if self.proc is None else self.proc.poll())
        return "node --role {} port {} storage {} ({})".format(self.role, self.port, self.storage, state)

    # -- clients -----------------------------------------------------------------------------------------

    def client(self):
        """A pymilvus 1.1.2 client on this node (connect runs Cmd("version") and requires 1.1.x)."""
        assert self.port, "node not started"
        milvus = Milvus(host="127.0.0.1", port=str(self.port), pre_ping=False, wait_timeout=10, max_retry=1)
        c = TimedClient(milvus)
        self._clients.append(c)
        return c

    def _close_clients(self):
        for c in self._clients:
            c.close()
        self._clients = []


def kill_all_nodes():
    with _all_nodes_lock:
        nodes = list(ALL_NODES)
    for node in nodes:
        try:
            node.kill()
        except Exception:  # noqa: BLE001 - best effort in a finalizer
            pass


# --------------------------------------------------------------------------------------------------------
# pymilvus with deadlines
# --------------------------------------------------------------------------------------------------------

class TimedClient:
    """Wraps `milvus.Milvus` and gives every call that takes a `timeout` one (RPC_TIMEOUT), so no call waits
    forever (pymilvus uses wait_for_ready with no deadline by default). Everything else is pymilvus as is."""

    def __init__(self, milvus, timeout=RPC_TIMEOUT):
        self._milvus = milvus
        self._timeout = timeout

    def __getattr__(self, name):
        attr = getattr(self._milvus, name)
        if not callable(attr):
            return attr
        try:
            sig = inspect.signature(attr)
        except (TypeError, ValueError):
            return attr
        if "timeout" not in sig.parameters:
            return attr

        def call(*args, **kwargs):
            bound = sig.bind_partial(*args, **kwargs)
            if "timeout" not in bound.arguments:
                kwargs["timeout"] = self._timeout
            return attr(*args, **kwargs)

        call.__name__ = name
        return call

    @property
    def milvus(self):
        return self._milvus

    def stub(self):
        """pymilvus's own generated gRPC stub on this connection, for requests pymilvus would refuse to send."""
        return self._milvus._connection().client()._stub

    def close(self):
        try:
            self._milvus.close()
        except Exception:  # noqa: BLE001
            pass


# --------------------------------------------------------------------------------------------------------
# Status assertions
# --------------------------------------------------------------------------------------------------------

def milvus_code(status):
    """The status's Milvus ErrorCode, or None when the call failed at the gRPC level (pymilvus then puts a
    grpc.StatusCode in `code`)."""
    code = status.code
    if isinstance(code, grpc.StatusCode):
        return None
    return code


def assert_ok(status, what=""):
    assert status.OK(), "{} failed: code={!r} message={!r}".format(what or "call", status.code, status.message)


def assert_error(status, codes=None, what=""):
    """The server answered with a Milvus error status: non-zero ErrorCode (not a gRPC transport failure)
    and a non-empty reason; with `codes`, the ErrorCode is one of them."""
    label = what or "call"
    assert not status.OK(), "{} succeeded but should have failed".format(label)
    code = milvus_code(status)
    assert code is not None, "{} failed at the gRPC level ({}: {}), not with a Milvus status".format(
        label, status.code, status.message)
    assert code != SUCCESS
    assert isinstance(status.message, str) and status.message.strip(), \
        "{} failed with code {} but an empty reason".format(label, code)
    if codes is not None:
        codes = {codes} if isinstance(codes, int) else set(codes)
        assert code in codes, "{} failed with code {} ({!r}), expected one of {}".format(
            label, code, status.message, sorted(codes))


def assert_read_only_refusal(status, what):
    """A write refused by a read node: PERMISSION_DENIED (3), with a reason that says why."""
    assert_error(status, [PERMISSION_DENIED], what=what + " on a read node")
    assert READ_ONLY_WORDS.search(status.message), \
        "{} on a read node was refused, but the reason does not say it is read-only: {!r}".format(
            what, status.message)


def wait_until(predicate, timeout=POLL_TIMEOUT, interval=0.1, what="condition"):
    """Polls `predicate` until it returns a truthy value or `timeout` passes; returns the last value."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            return last
        time.sleep(interval)


# --------------------------------------------------------------------------------------------------------
# Data, brute force, result comparison
# --------------------------------------------------------------------------------------------------------

def rand_vectors(rng, n, dim):
    return rng.random((n, dim), dtype=np.float32)


def as_rows(arr):
    """float32 rows as Python lists (exact: every float32 is a float64, and protobuf stores float32)."""
    return [[float(x) for x in row] for row in np.asarray(arr, dtype=np.float32)]


def distances(data, queries, metric):
    """Squared L2 (Milvus 1.1 returns squared L2) or inner product, in float64, shape (nq, n)."""
    d = np.asarray(data, dtype=np.float64)
    q = np.asarray(queries, dtype=np.float64)
    if metric == "L2":
        return ((q[:, None, :] - d[None, :, :]) ** 2).sum(axis=2)
    if metric == "IP":
        return q @ d.T
    raise ValueError(metric)


def brute_force(data, ids, queries, topk, metric):
    """Exact top-k: (ids, distances) per query, best first (ascending for L2, descending for IP); rows have
    min(topk, n) entries."""
    ids = np.asarray(ids, dtype=np.int64)
    dist = distances(data, queries, metric)
    order = np.argsort(dist, axis=1, kind="stable")
    if metric == "IP":
        order = order[:, ::-1]
    k = min(topk, len(ids))
    out_ids = [ids[row[:k]].tolist() for row in order]
    out_d = [dist[i, row[:k]].tolist() for i, row in enumerate(order)]
    return out_ids, out_d


def has_near_tie(data, query, topk, metric, gap=1e-3):
    """True when two of the query's best min(topk+1, n) distances are within `gap` (relative), so an exact
    id order could legitimately differ between float32 and float64 arithmetic."""
    d = distances(data, [query], metric)[0]
    d = np.sort(d)
    if metric == "IP":
        d = d[::-1]
    head = d[:min(topk + 1, len(d))]
    diffs = np.abs(np.diff(head))
    scale = np.maximum(1.0, np.abs(head[:-1]))
    return bool(np.any(diffs < gap * scale))


def tie_free_queries(rng, data, topk, metric, nq, stored=0):
    """`nq` queries (the first `stored` of them copies of stored rows) whose exact top-k has no near ties,
    so comparing ids exactly is meaningful. Deterministic for a seeded `rng`."""
    data = np.asarray(data, dtype=np.float32)
    out = []
    for _ in range(2000):
        if len(out) >= nq:
            break
        if len(out) < stored:
            q = data[rng.integers(len(data))]
        else:
            q = rng.random(data.shape[1], dtype=np.float32)
        if not has_near_tie(data, q, topk, metric):
            out.append(q)
    assert len(out) == nq, "test data: could not find {} tie-free queries".format(nq)
    return np.asarray(out, dtype=np.float32)


def assert_results_match(results, exp_ids, exp_dists, topk, what="search", rtol=1e-3, atol=1e-3):
    """A pymilvus TopKQueryResult equals the brute force: ids exactly, distances within tolerance, and the
    flat wire layout is nq × topk, padded with id -1 when fewer than topk rows exist."""
    nq = len(exp_ids)
    assert len(results) == nq, "{}: {} result rows, expected {}".format(what, len(results), nq)
    raw = results.raw
    assert raw.row_num == nq, "{}: row_num {} expected {}".format(what, raw.row_num, nq)
    assert len(raw.ids) == nq * topk, "{}: {} ids on the wire, expected nq*topk = {}".format(
        what, len(raw.ids), nq * topk)
    assert len(raw.distances) == nq * topk, "{}: {} distances on the wire, expected {}".format(
        what, len(raw.distances), nq * topk)
    for i in range(nq):
        row_ids = list(raw.ids[i * topk:(i + 1) * topk])
        row_d = list(raw.distances[i * topk:(i + 1) * topk])
        k = len(exp_ids[i])
        assert row_ids[:k] == list(exp_ids[i]), "{}: query {} ids {} expected {}".format(
            what, i, row_ids[:k], list(exp_ids[i]))
        assert row_ids[k:] == [-1] * (topk - k), "{}: query {} should be padded with -1 after {} hits: {}".format(
            what, i, k, row_ids)
        np.testing.assert_allclose(row_d[:k], exp_dists[i], rtol=rtol, atol=atol,
                                   err_msg="{}: query {} distances".format(what, i))


def result_ids(results):
    """Ids per query row, padding (-1) removed."""
    return [list(r) for r in results.id_array]


def assert_same_results(a, b, what):
    """Two search answers (e.g. write node and read node) are the same: ids and distances."""
    assert a.raw.row_num == b.raw.row_num, what
    assert list(a.raw.ids) == list(b.raw.ids), "{}: ids differ\n{}\n{}".format(what, list(a.raw.ids),
                                                                             list(b.raw.ids))
    np.testing.assert_allclose(list(a.raw.distances), list(b.raw.distances), rtol=1e-6, atol=1e-6,
                               err_msg=what)


# --------------------------------------------------------------------------------------------------------
# Metadata (read only): the searchable file ids of a collection, as SearchInFiles / ReloadSegments take them
# --------------------------------------------------------------------------------------------------------

def searchable_file_ids(storage, collection):
    path = pathlib.Path(storage) / "meta.sqlite"
    assert path.exists(), "metadata database {} not found (the node's default is meta.sqlite in --storage)".format(
        path)
    con = sqlite3.connect("file:{}?mode=ro".format(path), uri=True, timeout=5)
    try:
        rows = con.execute(
            "SELECT f.id FROM TableFiles f JOIN Tables t ON t.table_id = f.table_id "
            "WHERE (t.table_id = ? OR t.owner_table = ?) AND t.state <> 1 AND f.file_type IN (1, 2, 3) "
            "ORDER BY f.id",
            (collection, collection)).fetchall()
    finally:
        con.close()
    return [str(r[0]) for r in rows]


def stats_segments(stats):
    """[(partition tag, segment dict)] from a get_collection_stats answer."""
    out = []
    for p in stats.get("partitions") or []:
        for s in p.get("segments") or []:
            out.append((p.get("tag"), s))
    return out


# --------------------------------------------------------------------------------------------------------
# Raw requests through pymilvus's generated stub
# --------------------------------------------------------------------------------------------------------

def raw_call(stub, method, request, timeout=RPC_TIMEOUT):
    """Calls `method` on pymilvus's own stub; returns (Status, response). A gRPC-level failure becomes a Status
    whose code is the grpc.StatusCode (as pymilvus does), and response None."""
    try:
        resp = getattr(stub, method)(request, timeout=timeout)
    except grpc.RpcError as e:
        return Status(code=e.code(), message="gRPC error: {}".format(e.details())), None
    s = resp if hasattr(resp, "error_code") else resp.status
    return Status(code=s.error_code, message=s.reason), resp


def kv_params(value):
    """extra_params as pymilvus sends them: one KeyValuePair, key "params", value a JSON text."""
    if not isinstance(value, str):
        value = json.dumps(value)
    return [milvus_pb2.KeyValuePair(key="params", value=value)]


def row_records(rows):
    return [milvus_pb2.RowRecord(float_data=[float(x) for x in r]) for r in rows]


def track(request, node):
    """Remember that this test used `node`, so its stderr tail is added to the report if the test fails."""
    item = request.node
    used = getattr(item, "_mishards_nodes", None)
    if used is None:
        used = []
        item._mishards_nodes = used
    if node not in used:
        used.append(node)


# --------------------------------------------------------------------------------------------------------
# Gateway, cluster and demo processes (test_gateway.py)
# --------------------------------------------------------------------------------------------------------

# Settings of the gateway and the demo a developer's environment could carry (the flags below set what the
# tests need; these would add to or override it).
SCRUBBED_ENV.update({
    "WOSERVER", "DISCOVERY_CLASS_NAME", "DISCOVERY_STATIC_HOSTS", "DISCOVERY_STATIC_PORT", "DISCOVERY_FILE",
    "ROUTER_CLASS_NAME", "MAX_RETRY", "MISHARDS_NODE_TIMEOUT", "MISHARDS_READERS", "MISHARDS_GC_GRACE",
    "MISHARDS_CACHE_SIZE", "MISHARDS_INDEX_BUILD_THRESHOLD", "MISHARDS_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT", "ADMIN_HOST", "ADMIN_PORT", "MISHARDS_INSPECT_KEEP",
    "MISHARDS_SLOW_QUERY_MS",
})

CONNECT_FAILED = Status.CONNECT_FAILED  # 2


class PinnedNode(Node):
    """A data node that can be restarted on the port it got the first time (`--port 0`), as an operator
    restarts a crashed write node in place, so the gateway's `--woserver` still names it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_port = 0

    def args(self):
        args = super().args()
        args[args.index("--port") + 1] = str(self.fixed_port)
        return args

    def restart_same_port(self, timeout=START_TIMEOUT):
        """kill -9 (if running), then start again on the same port."""
        assert self.port, "node never started"
        self.fixed_port = self.port
        self.kill()
        return self.start(timeout=timeout)

    @property
    def addr(self):
        return "127.0.0.1:{}".format(self.port)


class Gateway(Node):
    """One `mishards gateway` process: file discovery on `hosts_file`, SQLite metadata of the nodes' storage,
    on 127.0.0.1 and a port the OS picks. Started, killed and logged like a node."""

    def __init__(self, binary, write_port, storage, hosts_file, log_dir, node_timeout=5, extra_args=()):
        super().__init__(binary, "gateway", storage, log_dir, extra_args=extra_args)
        self.write_port = write_port
        self.hosts_file = pathlib.Path(hosts_file)
        self.node_timeout = node_timeout

    def args(self):
        meta = (self.storage / "meta.sqlite").resolve()
        return [self.binary, "gateway", "--host", "127.0.0.1", "--port", "0",
                "--woserver", "127.0.0.1:{}".format(self.write_port),
                "--meta-uri", "sqlite:///{}".format(meta),  # sqlite:////abs/path
                "--discovery", "file", "--discovery-file", str(self.hosts_file),
                "--node-timeout", str(self.node_timeout),
                "--admin-port", "0"] + self.extra_args  # admin listener on a free loopback port

    def describe(self):
        state = "running" if self.alive() else "exited {}".format(None if self.proc is None else self.proc.poll())
        return "gateway port {} write node 127.0.0.1:{} hosts file {} ({})".format(
            self.port, self.write_port, self.hosts_file, state)


class Demo(Node):
    """One `mishards demo` process (gateway + write node + read nodes in one process) on `data_dir`."""

    def __init__(self, binary, data_dir, log_dir, readers=2):
        super().__init__(binary, "demo", data_dir, log_dir)
        self.readers = readers

    def args(self):
        return [self.binary, "demo", "--data-dir", str(self.storage), "--port", "0", "--host", "127.0.0.1",
                "--readers", str(self.readers), "--admin-port", "0"]

    def interrupt(self, timeout=20):
        """SIGINT (Ctrl-C) to the process; its exit code, or None if it is still running after `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        code = self.wait(timeout=timeout)
        self._close_clients()
        return code

    def describe(self):
        state = "running" if self.alive() else "exited {}".format(None if self.proc is None else self.proc.poll())
        return "demo port {} data dir {} readers {} ({})".format(self.port, self.storage, self.readers, state)


def write_hosts_file(path, nodes):
    """Replaces the hosts file at once (write + rename), one `127.0.0.1:PORT` per read node."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# read nodes of this test's gateway\n" + "".join(
        "127.0.0.1:{}\n".format(n.port) for n in nodes))
    os.replace(str(tmp), str(path))


class Cluster:
    """A write node, read nodes and a gateway on one storage folder, as separate processes.

    `on_start(process)` is called for every process started (the fixture uses it to track logs); the fixture
    kills them all (kill -9) when the test ends."""

    def __init__(self, binary, storage, log_dir, on_start=lambda p: None, node_timeout=5):
        self.binary = binary
        self.storage = pathlib.Path(storage)
        self.log_dir = pathlib.Path(log_dir)
        self.hosts_file = self.storage.parent / (self.storage.name + ".hosts")
        self.on_start = on_start
        self.node_timeout = node_timeout
        self.rw = None
        self.readers = []   # the read nodes listed in the hosts file
        self.gateway = None
        self.processes = []

    def _started(self, proc):
        self.processes.append(proc)
        self.on_start(proc)
        return proc.start()

    def start(self, readers=2):
        self.rw = PinnedNode(self.binary, "rw", self.storage, self.log_dir, auto_flush_interval=3600)
        self._started(self.rw)
        for _ in range(readers):
            self.readers.append(self.new_reader())
        write_hosts_file(self.hosts_file, self.readers)
        self.gateway = Gateway(self.binary, self.rw.port, self.storage, self.hosts_file, self.log_dir,
                               node_timeout=self.node_timeout)
        self._started(self.gateway)
        return self

    def new_reader(self):
        """Starts a read node on the shared storage (not yet in the hosts file)."""
        return self._started(PinnedNode(self.binary, "ro", self.storage, self.log_dir))

    def set_readers(self, nodes):
        self.readers = list(nodes)
        write_hosts_file(self.hosts_file, self.readers)

    def client(self):
        return self.gateway.client()

    def kill_all(self):
        for p in self.processes:
            try:
                p.kill()
            except Exception:  # noqa: BLE001 - best effort in a finalizer
                pass


def conn_stats(client):
    """The gateway's Cmd("conn_stats") answer, parsed."""
    st, text = client._cmd("conn_stats")
    assert_ok(st, 'Cmd("conn_stats")')
    try:
        stats = json.loads(text)
    except ValueError:
        raise AssertionError('Cmd("conn_stats") is not JSON: {!r}'.format(text))
    assert isinstance(stats, dict) and isinstance(stats.get("read_nodes"), list) and \
        isinstance(stats.get("write_node"), dict), 'Cmd("conn_stats") lacks write_node/read_nodes: {}'.format(text)
    return stats


def read_node_stats(stats):
    """{"127.0.0.1:PORT": entry} of a conn_stats answer."""
    return {r.get("node"): r for r in stats["read_nodes"]}


def wait_read_nodes(client, expected, timeout=POLL_TIMEOUT, what="read nodes"):
    """Waits (bounded) until conn_stats lists exactly the read nodes of `expected` ({addr: state}), each in
    its state; returns the last conn_stats answer, which the caller asserts on."""
    last = {}

    def check():
        last["stats"] = conn_stats(client)
        nodes = read_node_stats(last["stats"])
        return set(nodes) == set(expected) and all(nodes[a].get("state") == s for a, s in expected.items())

    wait_until(check, timeout=timeout, interval=0.2, what=what)
    stats = last["stats"]
    nodes = read_node_stats(stats)
    assert set(nodes) == set(expected) and all(nodes[a].get("state") == s for a, s in expected.items()), \
        "{}: after {:.0f} s conn_stats lists read nodes {} expected {}".format(
            what, timeout, {a: n.get("state") for a, n in nodes.items()}, expected)
    return stats
