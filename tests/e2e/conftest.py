"""pytest fixtures for the end-to-end tests of `mishards node` with the real pymilvus 1.1.2 client.

- `MISHARDS_BIN`: the built `mishards` binary (scripts/test.sh sets it; default target/debug/mishards).
- Every node is started on 127.0.0.1 with `--port 0` and found by its one stdout line
  `listening on 127.0.0.1:PORT`, read with a timeout; every node is killed in a finalizer.
- A per-test watchdog kills the nodes when a test runs past its deadline (MISHARDS_E2E_TEST_DEADLINE,
  default 120 s), so a hung RPC fails the test instead of hanging the run.
- When a test fails, the tail of the stderr log of the nodes it used is added to its report."""

import os
import pathlib
import sys
import threading

import pytest

HERE = pathlib.Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

# gRPC honours http(s)_proxy; the nodes are local.
for _var in ("no_proxy", "NO_PROXY", "no_grpc_proxy"):
    _cur = os.environ.get(_var, "")
    os.environ[_var] = ",".join(x for x in (_cur, "127.0.0.1", "localhost") if x)

import warnings  # noqa: E402

with warnings.catch_warnings():
    # pymilvus 1.1.2's generated protobuf code and pkg_resources use deprecated APIs; not ours to fix.
    warnings.simplefilter("ignore", DeprecationWarning)
    import helpers  # noqa: E402

TEST_DEADLINE = float(os.environ.get("MISHARDS_E2E_TEST_DEADLINE", "120"))


def _binary():
    env = os.environ.get("MISHARDS_BIN")
    path = pathlib.Path(env) if env else HERE.parent.parent / "target" / "debug" / "mishards"
    return path


@pytest.fixture(scope="session")
def mishards_bin():
    path = _binary()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail("MISHARDS_BIN={} is not an executable file; build with `cargo build` or set MISHARDS_BIN"
                    .format(path), pytrace=False)
    return path


@pytest.fixture(scope="session", autouse=True)
def _kill_every_node_at_exit():
    yield
    helpers.kill_all_nodes()


@pytest.fixture
def start_node(request, mishards_bin, tmp_path_factory):
    """start_node(role="rw", storage=None, auto_flush_interval=None) -> helpers.Node, started.
    Nodes started through it are killed (kill -9) when the test ends, pass or fail."""
    started = []

    def start(role="rw", storage=None, auto_flush_interval=None, extra_args=()):
        if storage is None:
            storage = tmp_path_factory.mktemp("storage")
        node = helpers.Node(mishards_bin, role, storage, tmp_path_factory.getbasetemp() / "logs",
                            auto_flush_interval=auto_flush_interval, extra_args=extra_args)
        started.append(node)
        helpers.track(request, node)
        return node.start()

    yield start
    for node in started:
        node.kill()


@pytest.fixture(scope="session")
def _shared_rw(mishards_bin, tmp_path_factory):
    """One write node (default auto-flush interval) shared by the API tests, each on its own collections."""
    node = helpers.Node(mishards_bin, "rw", tmp_path_factory.mktemp("shared-rw"),
                        tmp_path_factory.getbasetemp() / "logs")
    yield node
    node.kill()


@pytest.fixture
def rw(request, _shared_rw):
    """The shared write node, running. (Re)started if needed; after the test it must still be running:
    a test whose calls crashed it errors in teardown."""
    node = _shared_rw
    helpers.track(request, node)
    if not node.alive():
        node.kill()  # reap, drop stale clients
        node.start()
    yield node
    assert node.alive(), "the write node died during this test\n" + node.log_tail()


@pytest.fixture
def client(rw):
    """A pymilvus 1.1.2 client on the shared write node."""
    return rw.client()


@pytest.fixture(autouse=True)
def _watchdog(request):
    """Kills every node if the test runs past TEST_DEADLINE, which makes any blocked RPC fail."""
    fired = threading.Event()

    def fire():
        fired.set()
        helpers.kill_all_nodes()

    timer = threading.Timer(TEST_DEADLINE, fire)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
    if fired.is_set():
        pytest.fail("test ran past its {:.0f} s deadline; the nodes were killed".format(TEST_DEADLINE),
                    pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for node in getattr(item, "_mishards_nodes", []):
            report.sections.append(("node log: " + node.describe(), node.log_tail(40)))


# ---------------------------------------------------------------------------------------------------------
# gateway tests (test_gateway.py)
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def start_cluster(request, mishards_bin, tmp_path_factory):
    """start_cluster(readers=2) -> helpers.Cluster: a write node (auto-flush off), `readers` read nodes on
    the same storage, listed in a hosts file, and a gateway (file discovery, --node-timeout 5) in front.
    Every process it starts, then or later, is tracked for the report and killed (kill -9) at the end."""
    clusters = []

    def start(readers=2):
        cluster = helpers.Cluster(mishards_bin, tmp_path_factory.mktemp("cluster"),
                                  tmp_path_factory.getbasetemp() / "logs",
                                  on_start=lambda p: helpers.track(request, p))
        clusters.append(cluster)
        return cluster.start(readers=readers)

    yield start
    for cluster in clusters:
        cluster.kill_all()


@pytest.fixture
def demo_process(request, mishards_bin, tmp_path_factory):
    """demo_process(data_dir, readers=2) -> helpers.Demo, not started; killed (kill -9) at the end."""
    made = []

    def make(data_dir, readers=2):
        demo = helpers.Demo(mishards_bin, data_dir, tmp_path_factory.getbasetemp() / "logs", readers=readers)
        made.append(demo)
        helpers.track(request, demo)
        return demo

    yield make
    for demo in made:
        demo.kill()
