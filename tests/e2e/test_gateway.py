"""End-to-end tests of the gateway (`mishards gateway`) and the embedded demo (`mishards demo`) with the real
client, pymilvus 1.1.2.

Each test starts its own processes on 127.0.0.1 and ports the OS picks: a write node (`--auto-flush-interval
3600`, so only `flush` makes segment files), read nodes on the same storage folder, and a gateway with file
discovery (`--discovery file`, the hosts file rewritten to change membership live) and `--node-timeout 5`.
Every process is killed (kill -9) when the test ends; the conftest watchdog bounds every test.

Data: batches of 5,000 × 64-dim float32 rows (≈ 1.3 MB), each followed by a flush, in collections with
index_file_size = 1 MB, so every batch stays a segment file of its own (a file at index_file_size is not
merged) and a search has several files to split. Seven files over three read nodes: with the gateway's load
bound (no node owns more than ceil(1.25 · 7 / 3) = 3 files of a search) every read node owns at least one
file of every search, so "every read node served" is a fact to check, not luck.

Sections: split search and pass-through · concurrent clients sharing node calls · a read node killed under
load, then replaced · the write node killed, then restarted · every read node killed · the demo, stopped with
Ctrl-C and restarted."""

import re
import threading
import time
import zlib

import numpy as np
import pytest

from milvus import MetricType

import helpers as h
from helpers import CONNECT_FAILED, assert_error, assert_ok

DIM = 64
ROWS = 5000          # rows per batch: 5,000 × 64 × 4 B ≈ 1.3 MB > index_file_size 1 MB
FILES = 7            # batches (= segment files) per collection searched across three read nodes
TOPK = 10


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: the same data on every run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


# ------------------------------------------------------------------------------------------------------------
# small helpers on top of pymilvus
# ------------------------------------------------------------------------------------------------------------

def create(c, metric=MetricType.L2, dim=DIM, index_file_size=1, prefix="g"):
    name = h.unique_name(prefix)
    assert_ok(c.create_collection({"collection_name": name, "dimension": dim,
                                   "index_file_size": index_file_size, "metric_type": metric}),
              "create_collection " + name)
    return name


def insert_ok(c, name, vectors, ids=None, partition_tag=None):
    st, got = c.insert(name, h.as_rows(vectors), ids=None if ids is None else [int(i) for i in ids],
                       partition_tag=partition_tag)
    assert_ok(st, "insert of {} rows into {} (partition {})".format(len(vectors), name, partition_tag))
    got = list(got)
    assert len(got) == len(vectors), "insert returned {} ids for {} rows".format(len(got), len(vectors))
    if ids is not None:
        assert got == [int(i) for i in ids], "insert with ids returned other ids"
    return got


def flush_ok(c, *names):
    assert_ok(c.flush(list(names)), "flush {}".format(names))


def count_of(c, name):
    st, n = c.count_entities(name)
    assert_ok(st, "count_entities " + name)
    return n


def load_files(c, name, rng, files, rows=ROWS, dim=DIM):
    """`files` batches, each inserted and flushed on its own: (data, ids) of everything inserted."""
    data, ids = [], []
    for _ in range(files):
        v = h.rand_vectors(rng, rows, dim)
        ids += insert_ok(c, name, v)
        flush_ok(c, name)
        data.append(v)
    return np.concatenate(data), ids


def assert_own_files(c, storage, name, files, rows=ROWS):
    """get_collection_stats (relayed to the write node) and the metadata agree: one segment per batch."""
    st, stats = c.get_collection_stats(name)
    assert_ok(st, "get_collection_stats " + name)
    assert stats.get("row_count") == files * rows, "get_collection_stats row_count {} expected {}".format(
        stats.get("row_count"), files * rows)
    segments = h.stats_segments(stats)
    assert len(segments) == files and all(s["row_count"] == rows for _, s in segments), \
        "test setup: expected {} segments of {} rows (index_file_size 1 MB), got {}".format(
            files, rows, [(t, s.get("row_count")) for t, s in segments])
    file_ids = h.searchable_file_ids(storage, name)
    assert len(file_ids) == files, "metadata lists searchable files {} for {} flushed batches".format(
        file_ids, files)
    return file_ids


def search(c, name, queries, topk=TOPK, partition_tags=None):
    return c.search(name, topk, h.as_rows(queries), partition_tags=partition_tags)


def search_and_check(c, name, data, ids, queries, metric, topk=TOPK, partition_tags=None, what="search"):
    st, res = search(c, name, queries, topk, partition_tags)
    assert_ok(st, what)
    exp_ids, exp_d = h.brute_force(data, ids, queries, topk, metric)
    h.assert_results_match(res, exp_ids, exp_d, topk, what=what)
    return res


def entities(c, name, ids, partition_tag=None):
    st, vecs = c.get_entity_by_id(name, [int(i) for i in ids], partition_tag=partition_tag)
    assert_ok(st, "get_entity_by_id {} (partition {})".format(list(ids)[:5], partition_tag))
    assert len(vecs) == len(ids), "get_entity_by_id returned {} entries for {} ids".format(len(vecs), len(ids))
    return vecs


def assert_entities_equal(c, name, ids, vectors, partition_tag=None):
    got = entities(c, name, ids, partition_tag)
    for vid, v, want in zip(ids, got, vectors):
        assert v, "get_entity_by_id (partition {}): id {} is missing".format(partition_tag, vid)
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), np.asarray(want, dtype=np.float32),
                                      err_msg="get_entity_by_id: vector of id {}".format(vid))


def assert_entities_absent(c, name, ids, partition_tag=None):
    for vid, v in zip(ids, entities(c, name, ids, partition_tag)):
        assert not v, "get_entity_by_id (partition {}): id {} should be absent".format(partition_tag, vid)


def requests_by_node(c):
    return {a: n.get("requests", 0) for a, n in h.read_node_stats(h.conn_stats(c)).items()}


def healthy(nodes):
    return {n.addr: "healthy" for n in nodes}


# ------------------------------------------------------------------------------------------------------------
# 1. a search split across read nodes equals the brute force; everything else passes through
# ------------------------------------------------------------------------------------------------------------

def test_search_split_across_read_nodes_is_exact_and_other_calls_pass_through(start_cluster, rng):
    cluster = start_cluster(readers=3)
    c = cluster.client()
    h.wait_read_nodes(c, healthy(cluster.readers), what="three read nodes healthy")

    # two collections of 7 files each, L2 and IP
    loaded = {}
    for metric, mt in (("L2", MetricType.L2), ("IP", MetricType.IP)):
        name = create(c, mt, prefix="split_" + metric.lower())
        data, ids = load_files(c, name, rng, FILES)
        assert_own_files(c, cluster.storage, name, FILES)
        assert count_of(c, name) == FILES * ROWS
        loaded[metric] = (name, data, ids)

    before = h.conn_stats(c)
    write_requests = before["write_node"].get("requests")
    for metric, (name, data, ids) in loaded.items():
        queries = h.tie_free_queries(rng, data, TOPK, metric, 5, stored=2 if metric == "L2" else 0)
        search_and_check(c, name, data, ids, queries, metric, what="{} search over {} files".format(metric, FILES))
        search_and_check(c, name, data, ids, queries[-1:], metric, topk=1, what="{} search, topk 1".format(metric))
    after = h.conn_stats(c)
    served = {a: n.get("requests", 0) for a, n in h.read_node_stats(after).items()}
    assert set(served) == {n.addr for n in cluster.readers}, "conn_stats read nodes {} expected {}".format(
        sorted(served), sorted(n.addr for n in cluster.readers))
    assert all(v > 0 for v in served.values()), \
        "every read node owns files of these searches, but conn_stats shows requests {}".format(served)
    assert after["write_node"].get("requests") == write_requests, \
        "searches over flushed files reached the write node (requests {} -> {})".format(
            write_requests, after["write_node"].get("requests"))
    assert after["write_node"].get("state") == "healthy", after["write_node"]

    # catalogue calls through the gateway
    name, data, ids = loaded["L2"]
    st, present = c.has_collection(name)
    assert_ok(st, "has_collection")
    assert present is True
    st, schema = c.get_collection_info(name)
    assert_ok(st, "get_collection_info")
    assert (schema.collection_name, schema.dimension, schema.index_file_size, schema.metric_type) == \
        (name, DIM, 1, MetricType.L2)
    st, names = c.list_collections()
    assert_ok(st, "list_collections")
    assert {loaded["L2"][0], loaded["IP"][0]} <= set(names)

    # partitions: tags as whole-string regexes, partition_tag on get/delete passed through
    p = create(c, prefix="parts")
    groups = {"_default": range(0, 200), "tag_a": range(1000, 1200), "tag_b": range(2000, 2200),
              "other": range(3000, 3200)}
    vectors = {}
    for tag in ("tag_a", "tag_b", "other"):
        assert_ok(c.create_partition(p, tag), "create_partition " + tag)
    for tag, pids in groups.items():
        vectors[tag] = h.rand_vectors(rng, len(pids), DIM)
        insert_ok(c, p, vectors[tag], ids=pids, partition_tag=None if tag == "_default" else tag)
        flush_ok(c, p)
    st, parts = c.list_partitions(p)
    assert_ok(st, "list_partitions")
    assert sorted(x.tag for x in parts) == ["_default", "other", "tag_a", "tag_b"]
    st, present = c.has_partition(p, "tag_a")
    assert_ok(st, "has_partition")
    assert present is True
    assert count_of(c, p) == 800

    def pick(tags, drop=()):
        sel_ids = [i for t in tags for i in groups[t] if i not in drop]
        sel = np.stack([vectors[t][k] for t in tags for k, i in enumerate(groups[t]) if i not in drop])
        return sel, sel_ids

    for tags, expected in ((["tag_.*"], ["tag_a", "tag_b"]), (["other", "_default"], ["_default", "other"]),
                           (None, ["_default", "tag_a", "tag_b", "other"])):
        sel, sel_ids = pick(expected)
        queries = h.tie_free_queries(rng, sel, TOPK, "L2", 3, stored=1)
        search_and_check(c, p, sel, sel_ids, queries, "L2", partition_tags=tags,
                         what="search with partition tags {}".format(tags))
    st, _ = search(c, p, vectors["tag_a"][:1], partition_tags=["tag"])  # no whole-string match
    assert_error(st, what="search with partition tag 'tag' (matches no partition as a whole string)")

    assert_entities_equal(c, p, [1005, 2007], [vectors["tag_a"][5], vectors["tag_b"][7]])
    assert_entities_equal(c, p, [1005], [vectors["tag_a"][5]], partition_tag="tag_a")
    assert_entities_absent(c, p, [5, 2007], partition_tag="tag_a")
    assert_entities_equal(c, p, [5], [vectors["_default"][5]], partition_tag="_default")

    # delete with a partition tag removes only what is in that partition
    assert_ok(c.delete_entity_by_id(p, [5, 1006], partition_tag="tag_a"), "delete_entity_by_id in tag_a")
    flush_ok(c, p)
    assert count_of(c, p) == 799, "a delete in tag_a of ids 5 (in _default) and 1006 (in tag_a)"
    assert_entities_equal(c, p, [5], [vectors["_default"][5]])
    assert_entities_absent(c, p, [1006])
    st, res = search(c, p, vectors["tag_a"][6:7], topk=5)
    assert_ok(st, "search for a deleted vector")
    assert 1006 not in h.result_ids(res)[0], "the read nodes still find the deleted id 1006: {}".format(
        h.result_ids(res))
    sel, sel_ids = pick(["tag_a", "tag_b"], drop={1006})
    queries = np.concatenate([vectors["tag_a"][6:7], h.tie_free_queries(rng, sel, TOPK, "L2", 2)])
    if h.has_near_tie(sel, queries[0], TOPK, "L2"):
        queries = queries[1:]
    search_and_check(c, p, sel, sel_ids, queries, "L2", partition_tags=["tag_.*"], what="search after delete")

    st, stats = c.get_collection_stats(p)
    assert_ok(st, "get_collection_stats")
    by_tag = {x["tag"]: x["row_count"] for x in stats["partitions"]}
    assert stats["row_count"] == 799 and by_tag == {"_default": 200, "tag_a": 199, "tag_b": 200, "other": 200}, \
        stats
    assert stats["partitions"][0]["tag"] == "_default"

    assert_ok(c.drop_partition(p, "other"), "drop_partition")
    st, parts = c.list_partitions(p)
    assert_ok(st, "list_partitions")
    assert sorted(x.tag for x in parts) == ["_default", "tag_a", "tag_b"]
    assert count_of(c, p) == 599
    sel, sel_ids = pick(["_default", "tag_a", "tag_b"], drop={1006})
    search_and_check(c, p, sel, sel_ids, h.tie_free_queries(rng, sel, TOPK, "L2", 2), "L2",
                     what="search after drop_partition")


# ------------------------------------------------------------------------------------------------------------
# 2. a read node killed under load costs no answer; a replacement joins through the hosts file
# ------------------------------------------------------------------------------------------------------------

def test_concurrent_clients_get_exact_answers_while_their_searches_share_node_calls(start_cluster, rng):
    """Sixteen pymilvus clients searching at once: the read nodes' links batch searches of the same shape
    into one SearchInFiles (conn_stats: batched_searches), and every search still gets its exact answer."""
    cluster = start_cluster(readers=2)
    c = cluster.client()
    h.wait_read_nodes(c, healthy(cluster.readers), what="two read nodes healthy")
    name = create(c, prefix="batched")
    data, ids = load_files(c, name, rng, 4)
    assert_own_files(c, cluster.storage, name, 4)
    clients = [cluster.client() for _ in range(16)]
    failures = []

    def searches(client, queries):
        try:
            for q in queries:
                search_and_check(client, name, data, ids, q, "L2", what="concurrent search")
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            failures.append(repr(e))

    batched = 0
    for round_ in range(5):   # bounded: at most 5 rounds of 16 clients × 8 searches
        work = [[h.tie_free_queries(rng, data, TOPK, "L2", 1 + (i + j) % 3) for j in range(8)]
                for i in range(len(clients))]
        threads = [threading.Thread(target=searches, args=(cl, qs)) for cl, qs in zip(clients, work)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not any(t.is_alive() for t in threads), "concurrent searches did not finish within 120 s"
        assert not failures, "round {}: {}".format(round_, failures[:3])
        stats = h.read_node_stats(h.conn_stats(c))
        batched = sum(n.get("batched_searches", 0) for n in stats.values())
        calls = sum(n.get("search_calls", 0) for n in stats.values())
        requests = sum(n.get("requests", 0) for n in stats.values())
        assert 0 < calls <= requests, "conn_stats: {} search calls for {} requests".format(calls, requests)
        if batched:
            break
    assert batched > 0, "16 clients searching at once, yet no read-node call carried more than one search"


def test_read_node_killed_under_search_load_then_replaced(start_cluster, rng):
    cluster = start_cluster(readers=3)
    c = cluster.client()
    name = create(c)
    data, ids = load_files(c, name, rng, FILES)
    assert_own_files(c, cluster.storage, name, FILES)
    h.wait_read_nodes(c, healthy(cluster.readers), what="three read nodes healthy")

    query_sets = [h.tie_free_queries(rng, data, TOPK, "L2", 3, stored=1) for _ in range(4)]
    expected = [h.brute_force(data, ids, q, TOPK, "L2") for q in query_sets]
    for q, (e_ids, e_d) in zip(query_sets, expected):
        st, res = search(c, name, q)
        assert_ok(st, "search before the kill")
        h.assert_results_match(res, e_ids, e_d, TOPK, what="search before the kill")

    victim = cluster.readers[1]
    threads_n, per_thread = 4, 20
    done = []
    problems = []
    lock = threading.Lock()
    enough = threading.Event()   # some searches done: kill now

    def worker(t):
        wc = cluster.client()
        q = query_sets[t]
        e_ids, e_d = expected[t]
        for i in range(per_thread):
            what = "thread {} search {}".format(t, i)
            try:
                st, res = search(wc, name, q)
                if not st.OK():
                    raise AssertionError("{} failed: code={!r} message={!r}".format(what, st.code, st.message))
                h.assert_results_match(res, e_ids, e_d, TOPK, what=what)
            except Exception as e:  # noqa: BLE001 - every failure is reported, not just assertions
                with lock:
                    problems.append("{}: {}".format(type(e).__name__, e))
            with lock:
                done.append((t, i))
                if len(done) >= 8:
                    enough.set()

    threads = [threading.Thread(target=worker, args=(t,), daemon=True) for t in range(threads_n)]
    for t in threads:
        t.start()
    assert enough.wait(timeout=30), "the search loop did not get going"
    victim.kill()  # kill -9 while searches are in flight
    killed_after = len(done)
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "searches still running 60 s after the kill"
    assert len(done) == threads_n * per_thread
    assert killed_after < threads_n * per_thread, "the kill came after the last search"
    assert not problems, "{} of {} searches went wrong around the kill of read node {}:\n  {}".format(
        len(problems), threads_n * per_thread, victim.addr, "\n  ".join(problems[:10]))

    survivors = [n for n in cluster.readers if n is not victim]
    states = dict(healthy(survivors), **{victim.addr: "down"})
    h.wait_read_nodes(c, states, timeout=15, what="the killed read node marked down")

    # replace it: drop it from the hosts file, add a new read node
    new = cluster.new_reader()
    cluster.set_readers(survivors + [new])
    h.wait_read_nodes(c, healthy(survivors + [new]), timeout=15,
                      what="the killed node gone and the new node healthy")
    for q, (e_ids, e_d) in zip(query_sets, expected):
        st, res = search(c, name, q)
        assert_ok(st, "search after the replacement")
        h.assert_results_match(res, e_ids, e_d, TOPK, what="search after the replacement")
    served = requests_by_node(c)
    assert served.get(new.addr, 0) > 0, \
        "the new read node {} owns files of every search but served none: {}".format(new.addr, served)
    assert set(served) == {n.addr for n in survivors + [new]}


# ------------------------------------------------------------------------------------------------------------
# 3. write node killed: reads go on, writes fail fast and clearly; restarted: writes resume, WAL replayed
# ------------------------------------------------------------------------------------------------------------

def test_write_node_killed_then_restarted(start_cluster, rng):
    cluster = start_cluster(readers=2)
    c = cluster.client()
    name = create(c, prefix="wdown")
    assert_ok(c.create_partition(name, "p1"), "create_partition")
    data, ids = load_files(c, name, rng, 3)
    pdata = h.rand_vectors(rng, 100, DIM)
    ids += insert_ok(c, name, pdata, partition_tag="p1")
    flush_ok(c, name)
    data = np.concatenate([data, pdata])
    other = create(c, MetricType.IP, dim=8, prefix="wdown_other")
    h.wait_read_nodes(c, healthy(cluster.readers), what="read nodes healthy")

    # acknowledged but never flushed: only the write node's WAL has these
    wal_data = h.rand_vectors(rng, 300, DIM)
    wal_ids = insert_ok(c, name, wal_data)

    queries = h.tie_free_queries(rng, data, TOPK, "L2", 4, stored=2)
    search_and_check(c, name, data, ids, queries, "L2", what="search before the crash")

    wport = cluster.rw.port
    waddr = "127.0.0.1:{}".format(wport)
    cluster.rw.kill()

    # reads go on
    search_and_check(c, name, data, ids, queries, "L2", what="search with the write node down")
    search_and_check(c, name, pdata, ids[-100:], h.tie_free_queries(rng, pdata, TOPK, "L2", 2), "L2",
                     partition_tags=["p1"], what="search of partition p1 with the write node down")
    st, present = c.has_collection(name)
    assert_ok(st, "has_collection with the write node down")
    assert present is True
    st, present = c.has_collection(h.unique_name("missing"))
    assert_ok(st, "has_collection of a missing name with the write node down")
    assert present is False
    st, schema = c.get_collection_info(name)
    assert_ok(st, "describe_collection with the write node down")
    assert (schema.collection_name, schema.dimension, schema.index_file_size, schema.metric_type) == \
        (name, DIM, 1, MetricType.L2)
    st, schema = c.get_collection_info(other)
    assert_ok(st, "describe_collection with the write node down")
    assert (schema.dimension, schema.metric_type) == (8, MetricType.IP)
    st, names = c.list_collections()
    assert_ok(st, "list_collections with the write node down")
    assert {name, other} <= set(names)
    st, parts = c.list_partitions(name)
    assert_ok(st, "list_partitions with the write node down")
    assert sorted(x.tag for x in parts) == ["_default", "p1"]
    assert count_of(c, name) == len(ids), "count_entities with the write node down: the flushed rows"

    # writes fail fast, CONNECT_FAILED, naming the write node
    def fails_fast(call, what):
        t0 = time.monotonic()
        result = call()
        took = time.monotonic() - t0
        st = result[0] if isinstance(result, tuple) else result
        assert_error(st, CONNECT_FAILED, what + " with the write node down")
        assert waddr in st.message, "{}: the reason does not name the write node {}: {!r}".format(
            what, waddr, st.message)
        assert took < 5, "{} took {:.1f} s to fail with the write node down".format(what, took)

    for _ in range(2):
        fails_fast(lambda: c.insert(name, h.as_rows(h.rand_vectors(rng, 5, DIM))), "insert")
        fails_fast(lambda: c.create_collection({"collection_name": h.unique_name("nope"), "dimension": 8}),
                   "create_collection")
    time.sleep(1.5)  # the write node's link is marked down by now: still fast, still clear
    fails_fast(lambda: c.insert(name, h.as_rows(h.rand_vectors(rng, 5, DIM))), "insert")
    fails_fast(lambda: c.create_collection({"collection_name": h.unique_name("nope"), "dimension": 8}),
               "create_collection")
    stats = h.conn_stats(c)
    assert stats["write_node"].get("state") in ("down", "suspect"), \
        "conn_stats with the write node killed: {}".format(stats["write_node"])

    # restart on the same port: writes resume (bounded retry), the WAL is replayed
    cluster.rw.restart_same_port()
    assert cluster.rw.port == wport
    new_data = h.rand_vectors(rng, 50, DIM)
    deadline = time.monotonic() + 30
    while True:
        st, new_ids = c.insert(name, h.as_rows(new_data))
        if st.OK() or time.monotonic() > deadline:
            break
        assert h.milvus_code(st) == CONNECT_FAILED, "insert while the write node restarts: {} {!r}".format(
            st.code, st.message)
        time.sleep(0.5)
    assert_ok(st, "insert within 30 s of the write node's restart")
    assert len(new_ids) == 50
    flush_ok(c, name)
    all_data = np.concatenate([data, wal_data, new_data])
    all_ids = ids + wal_ids + list(new_ids)
    assert len(set(all_ids)) == len(all_ids), "auto ids after the restart repeat earlier ids"
    assert count_of(c, name) == len(all_ids), \
        "after restart + flush: count {} expected {} (rows acknowledged before the crash lost?)".format(
            count_of(c, name), len(all_ids))
    assert_entities_equal(c, name, wal_ids[:5] + wal_ids[-5:], np.concatenate([wal_data[:5], wal_data[-5:]]))
    queries = np.concatenate([wal_data[:2], h.tie_free_queries(rng, all_data, TOPK, "L2", 2)])
    queries = np.stack([q for q in queries if not h.has_near_tie(all_data, q, TOPK, "L2")])
    search_and_check(c, name, all_data, all_ids, queries, "L2", what="search after the restart")
    fresh = create(c, prefix="after_restart")
    st, present = c.has_collection(fresh)
    assert_ok(st, "has_collection")
    assert present is True
    h.wait_read_nodes(c, healthy(cluster.readers), what="read nodes still healthy")
    assert h.conn_stats(c)["write_node"].get("state") == "healthy"


# ------------------------------------------------------------------------------------------------------------
# 4. every read node down: an error naming the files and nodes, never a short answer
# ------------------------------------------------------------------------------------------------------------

ADDR = re.compile(r"127\.0\.0\.1:\d+")


def test_all_read_nodes_down_search_is_an_error_naming_files_and_nodes(start_cluster, rng):
    cluster = start_cluster(readers=2)
    c = cluster.client()
    # a few files first, so this collection's file ids have two digits and are told apart in the message
    decoy = create(c, dim=4, prefix="decoy")
    for _ in range(12):
        insert_ok(c, decoy, h.rand_vectors(rng, 3, 4))
        flush_ok(c, decoy)
    name = create(c, prefix="nodown")
    data, ids = load_files(c, name, rng, 3)
    file_ids = assert_own_files(c, cluster.storage, name, 3)
    assert all(int(f) >= 10 for f in file_ids), "test setup: file ids {}".format(file_ids)
    h.wait_read_nodes(c, healthy(cluster.readers), what="read nodes healthy")
    queries = h.tie_free_queries(rng, data, TOPK, "L2", 2, stored=1)
    search_and_check(c, name, data, ids, queries, "L2", what="search with the read nodes up")

    for n in cluster.readers:
        n.kill()

    def check_refused(what):
        st, res = search(c, name, queries)
        assert not st.OK(), "{}: answered OK with {} ids (a short answer) while no read node is up".format(
            what, len(res.raw.ids) if res is not None and hasattr(res, "raw") else res)
        assert_error(st, what=what)
        msg = st.message
        missing_nodes = [n.addr for n in cluster.readers if n.addr not in msg]
        assert not missing_nodes, "{}: the reason does not name the read nodes {}: {!r}".format(
            what, missing_nodes, msg)
        numbers = set(re.findall(r"\d+", ADDR.sub(" ", msg)))
        missing_files = [f for f in file_ids if f not in numbers]
        assert not missing_files, "{}: the reason does not name the files {} (of {}): {!r}".format(
            what, missing_files, file_ids, msg)

    check_refused("search right after both read nodes were killed")
    check_refused("second search")
    h.wait_read_nodes(c, {n.addr: "down" for n in cluster.readers}, timeout=15, what="both read nodes down")
    check_refused("search with both read nodes marked down")
    st, res = search(c, name, queries, partition_tags=["_default"])
    assert not st.OK(), "search of _default answered OK with no read node up"

    # one comes back on its address: the gateway serves again, exactly
    back = cluster.readers[0]
    back.restart_same_port()
    h.wait_read_nodes(c, {back.addr: "healthy", cluster.readers[1].addr: "down"}, timeout=20,
                      what="the restarted read node healthy again")
    search_and_check(c, name, data, ids, queries, "L2", what="search with one read node back")


# ------------------------------------------------------------------------------------------------------------
# 5. the demo: one process, stopped with Ctrl-C, data kept across restarts
# ------------------------------------------------------------------------------------------------------------

def test_demo_serves_stops_on_ctrl_c_and_keeps_its_data(demo_process, tmp_path, rng):
    data_dir = tmp_path / "demo-data"
    demo = demo_process(data_dir, readers=2)
    demo.start()
    c = demo.client()
    st, version = c.server_version()
    assert_ok(st, "server_version")
    assert version.startswith("1.1."), version

    name = create(c, dim=16, index_file_size=1024, prefix="demo")
    ip = create(c, MetricType.IP, dim=16, index_file_size=1024, prefix="demo_ip")
    data = h.rand_vectors(rng, 600, 16)
    ids = insert_ok(c, name, data[:300])
    ids += insert_ok(c, name, data[300:])
    ip_ids = insert_ok(c, ip, data)
    flush_ok(c, name, ip)
    assert count_of(c, name) == 600
    queries = h.tie_free_queries(rng, data, TOPK, "L2", 4, stored=2)
    search_and_check(c, name, data, ids, queries, "L2", what="demo search")
    ip_queries = h.tie_free_queries(rng, data, TOPK, "IP", 3)
    search_and_check(c, ip, data, ip_ids, ip_queries, "IP", what="demo IP search")
    stats = h.conn_stats(c)
    assert len(stats["read_nodes"]) == 2, "the demo's conn_stats lists read nodes {}".format(stats["read_nodes"])
    assert sum(n.get("requests", 0) for n in stats["read_nodes"]) > 0, \
        "the demo's searches reached no read node: {}".format(stats["read_nodes"])

    code = demo.interrupt(timeout=20)
    assert code is not None, "the demo still runs 20 s after Ctrl-C"
    assert code == 0, "the demo exited with code {} after Ctrl-C".format(code)

    demo.start()
    c = demo.client()
    st, present = c.has_collection(name)
    assert_ok(st, "has_collection after the demo restarted")
    assert present is True, "the demo lost its collection across a restart"
    st, names = c.list_collections()
    assert_ok(st, "list_collections")
    assert {name, ip} <= set(names)
    assert count_of(c, name) == 600, "the demo lost rows across a restart"
    assert_entities_equal(c, name, [ids[0], ids[299], ids[599]], data[[0, 299, 599]])
    search_and_check(c, name, data, ids, queries, "L2", what="demo search after the restart")
    search_and_check(c, ip, data, ip_ids, ip_queries, "IP", what="demo IP search after the restart")
    more = h.rand_vectors(rng, 20, 16)
    more_ids = insert_ok(c, name, more)
    flush_ok(c, name)
    assert count_of(c, name) == 620
    assert not set(more_ids) & set(ids), "auto ids after the demo's restart repeat earlier ids"
    code = demo.interrupt(timeout=20)
    assert code == 0, "the restarted demo exited with {} after Ctrl-C (None: still running after 20 s)".format(code)
