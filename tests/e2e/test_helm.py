"""The Helm chart (deploy/helm/mishards), rendered with the real `helm template` for the default values and
every combination its README documents, checked offline:

- every rendered object against the Kubernetes API schemas (kubernetes-validate, strict: unknown fields
  fail), for the oldest and the newest Kubernetes version the chart supports;
- the wiring: discovery's label selector finds the read nodes and only them, WOSERVER reaches the write
  node's Service, probes hit the ports the processes listen on, RBAC grants only get/list/watch pods;
- the gateway's pod template is the same for any number of read nodes (scaling never restarts it);
- each mishards container's environment, as Kubernetes would hand it over (Secrets resolved, $(VAR)
  substituted), passes the built binary's `mishards config check` for its role, and every variable the
  chart sets is one the binary reads.

helm comes from scripts/install-test-tools.sh (MISHARDS_TEST_HELM; scripts/test.sh sets it, and the fixture
runs the script when it is not set). Nothing here talks to a cluster."""

import base64
import copy
import os
import pathlib
import re
import subprocess

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent.parent
CHART = ROOT / "deploy" / "helm" / "mishards"
RELEASE = "demo"
NAMESPACE = "vectors"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25.0", "1.37.0")
MISHARDS_COMPONENTS = ("gateway", "write-node", "read-node")

# The combinations the chart's README documents, as --set arguments.
COMBINATIONS = {
    "default": [],
    "external-mysql": [
        "mysql.enabled=false", "externalMysql.enabled=true", "externalMysql.ip=db.example.internal",
        "externalMysql.port=3307", "externalMysql.user=milvus", "externalMysql.password=p@ss:w/rd",
        "externalMysql.database=vectors",
    ],
    "external-mysql-existing-secret": [
        "mysql.enabled=false", "externalMysql.enabled=true", "externalMysql.ip=10.0.0.5",
        "externalMysql.existingSecret=team-db", "externalMysql.existingSecretKey=password",
    ],
    "standalone-no-persistence": ["cluster.enabled=false", "persistence.enabled=false"],
    "tracing": ["tracing.enabled=true", "tracing.sampler.type=probabilistic", "tracing.sampler.param=0.25"],
    "tracing-external-collector": ["tracing.enabled=true", "tracing.otlpEndpoint=http://otel.monitoring:4317"],
    "service-monitor": ["serviceMonitor.enabled=true"],
    "scaled": ["readNodes.replicas=7", "gateway.replicas=3"],
    "settings": [
        "settings.TIMEZONE=Asia/Shanghai", "gateway.settings.MISHARDS_MAX_CONNECTIONS=1000000",
        "readNodes.settings.MISHARDS_CACHE_SIZE=8192", "writeNode.settings.MISHARDS_GC_GRACE=120",
        # A JSON (and so YAML values file) number is a float to Helm: 10000000 must not become 1e+07.
        'json:writeNode.settings={"MISHARDS_GC_GRACE": 120, "MISHARDS_INDEX_BUILD_THRESHOLD": 10000000}',
        "gateway.discovery.podPattern=^demo-mishards-read-node-[0-9]+$",
    ],
}


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="session")
def helm():
    path = os.environ.get("MISHARDS_TEST_HELM")
    if not path:
        # The project's own installer (idempotent), as scripts/test.sh runs it.
        run = subprocess.run([str(ROOT / "scripts" / "install-test-tools.sh")], capture_output=True, text=True,
                             timeout=300)
        if run.returncode != 0:
            pytest.fail("scripts/install-test-tools.sh failed, so there is no helm to render the chart with:\n"
                        + run.stderr, pytrace=False)
        found = dict(line.split("=", 1) for line in run.stdout.splitlines() if "=" in line)
        path = found.get("MISHARDS_TEST_HELM", "")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("MISHARDS_TEST_HELM={!r} is not an executable helm".format(path), pytrace=False)
    return path


def helm_template(helm, sets, expect_failure=False):
    args = [helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", KUBE_VERSIONS[0]]
    for s in sets:
        if s.startswith("json:"):
            args += ["--set-json", s[len("json:"):]]
        elif s.startswith(("externalMysql.password", "gateway.discovery.podPattern")):
            args += ["--set-string", s]
        else:
            args += ["--set", s]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if expect_failure:
        assert run.returncode != 0, "helm rendered values that must be refused: {}".format(sets)
        return run.stderr
    assert run.returncode == 0, "helm template {} failed:\n{}".format(sets, run.stderr)
    return [d for d in yaml.safe_load_all(run.stdout) if d]


_renders = {}


@pytest.fixture(scope="session")
def render(helm):
    def rendered(name):
        if name not in _renders:
            _renders[name] = helm_template(helm, COMBINATIONS[name])
        return copy.deepcopy(_renders[name])
    return rendered


def find(docs, kind, name=None, component=None):
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)
             and (component is None
                  or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)]
    return found


def one(docs, kind, name=None, component=None):
    found = find(docs, kind, name, component)
    assert len(found) == 1, "expected one {} {} {}, found {}".format(kind, name or "", component or "",
                                                                    [d["metadata"]["name"] for d in found])
    return found[0]


def workload(docs, component):
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
            and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == component]


def mishards_containers(docs):
    """(component, container, pod spec) of every mishards process."""
    out = []
    for component in MISHARDS_COMPONENTS:
        for w in workload(docs, component):
            spec = w["spec"]["template"]["spec"]
            for c in spec["containers"]:
                out.append((component, c, w))
    return out


def selector_matches(selector, labels):
    """A label selector string (a,b=c,d!=e) or a matchLabels map against labels (equality terms only)."""
    if isinstance(selector, dict):
        return all(labels.get(k) == v for k, v in selector.items())
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v.lstrip("="):
                return False
        else:
            raise AssertionError("selector term {!r} is not an equality: extend this test".format(term))
    return True


# The Secret the external-mysql-existing-secret combination names, as its owner would have made it.
OUTSIDE_SECRETS = {"team-db": {"password": "s3cret/with@odd:chars"}}


def container_env(docs, container):
    """The container's environment as the kubelet builds it: literal values, Secrets resolved from the
    rendered Secrets (or OUTSIDE_SECRETS for Secrets made outside the chart), $(NAME) of earlier variables
    substituted."""
    secrets = {}
    for s in find(docs, "Secret"):
        data = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        data.update(s.get("stringData") or {})
        secrets[s["metadata"]["name"]] = data
    secrets.update(OUTSIDE_SECRETS)
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                           lambda m: env.get(m.group(1), m.group(0)), str(e["value"]))
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, "env {} reads Secret {} that nothing provides".format(e["name"], ref)
            value = secrets[ref["name"]][ref["key"]]
        assert e["name"] not in env, "env {} is set twice".format(e["name"])
        env[e["name"]] = value
    return env


def named_port(container, name):
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    assert name in ports, "container {} has no port named {}".format(container["name"], name)
    return ports[name]


# ------------------------------------------------------------------------- schemas and object validity


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_every_rendered_object_is_valid_against_the_kubernetes_schemas(render, combo):
    import kubernetes_validate

    docs = render(combo)
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # A CRD: no upstream schema; test_service_monitor checks it.
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail("{} {} is not valid for Kubernetes {}: {} at {}".format(
                    doc["kind"], doc["metadata"]["name"], version, e.message, "/".join(map(str, e.path))),
                    pytrace=False)
        checked += 1
    assert checked >= 4, "too few objects rendered: {}".format([d["kind"] for d in docs])
    names = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), "an object is rendered twice: {}".format(names)
    for d in docs:
        assert len(d["metadata"]["name"]) <= 63, d["metadata"]["name"]


def test_the_default_render_is_the_whole_cluster(render):
    docs = render("default")
    gateway = one(docs, "Deployment", component="gateway")
    assert gateway["spec"]["replicas"] == 2
    write = one(docs, "StatefulSet", component="write-node")
    assert write["spec"]["replicas"] == 1
    read = one(docs, "StatefulSet", component="read-node")
    assert read["spec"]["replicas"] == 2
    one(docs, "StatefulSet", component="mysql")
    pdb = one(docs, "PodDisruptionBudget", component="read-node")
    assert selector_matches(pdb["spec"]["selector"]["matchLabels"], read["spec"]["template"]["metadata"]["labels"])
    assert not find(docs, "Deployment", component="jaeger")
    assert not [d for d in docs if d["kind"] == "ServiceMonitor"]
    # The client Service serves the gateways' gRPC port on 19530.
    svc = one(docs, "Service", name="{}-mishards".format(RELEASE))
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"][0]["port"] == 19530
    assert selector_matches(svc["spec"]["selector"], gateway["spec"]["template"]["metadata"]["labels"])
    assert named_port(gateway["spec"]["template"]["spec"]["containers"][0],
                      svc["spec"]["ports"][0]["targetPort"]) == 19530
    # Every container has resources and the mishards ones run unprivileged, read-only root.
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            for c in d["spec"]["template"]["spec"]["containers"]:
                assert c.get("resources", {}).get("requests"), "{} has no resource requests".format(c["name"])
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
                assert d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


# ------------------------------------------------------------------------------------ RBAC and discovery


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_rbac_grants_only_reading_pods_in_the_namespace(render, combo):
    docs = render(combo)
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    gateways = workload(docs, "gateway")
    if not gateways:
        assert not find(docs, "Role") and not find(docs, "RoleBinding")
        return
    role = one(docs, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = one(docs, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    account = one(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"],
                                    "namespace": NAMESPACE}]
    gateway_pod = gateways[0]["spec"]["template"]["spec"]
    assert gateway_pod["serviceAccountName"] == account["metadata"]["name"]
    assert gateway_pod["automountServiceAccountToken"] is True
    # Nothing else gets an API token.
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet") and d is not gateways[0]:
            spec = d["spec"]["template"]["spec"]
            assert spec.get("automountServiceAccountToken") is False, d["metadata"]["name"]
            assert "serviceAccountName" not in spec, d["metadata"]["name"]


@pytest.mark.parametrize("combo", ["default", "scaled", "settings"])
def test_discovery_finds_the_read_nodes_and_only_them(render, combo):
    docs = render(combo)
    gateway = one(docs, "Deployment", component="gateway")
    env = container_env(docs, gateway["spec"]["template"]["spec"]["containers"][0])
    assert env["DISCOVERY_CLASS_NAME"] == "kubernetes"
    assert env["DISCOVERY_KUBERNETES_NAMESPACE"] == NAMESPACE
    assert env["DISCOVERY_KUBERNETES_IN_CLUSTER"] == "true"
    selector = env["DISCOVERY_KUBERNETES_LABEL_SELECTOR"]
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            is_read = labels["app.kubernetes.io/component"] == "read-node"
            assert selector_matches(selector, labels) == is_read, (selector, d["metadata"]["name"])
            if is_read:
                read_pod = d["spec"]["template"]["spec"]
                read_name = d["metadata"]["name"]
    # Discovery takes the port named `milvus`; it is the port the read node serves gRPC on.
    read = read_pod["containers"][0]
    read_env = container_env(docs, read)
    assert named_port(read, "milvus") == int(read_env["SERVER_PORT"])
    assert env["DISCOVERY_STATIC_PORT"] == read_env["SERVER_PORT"]
    pattern = env.get("DISCOVERY_KUBERNETES_POD_PATT")
    if pattern:
        assert re.search(pattern, "{}-0".format(read_name)) and re.search(pattern, "{}-6".format(read_name))
        assert not re.search(pattern, "{}-mishards-write-node-0".format(RELEASE))


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_the_gateway_reaches_the_write_node_through_its_service(render, combo):
    docs = render(combo)
    if not workload(docs, "gateway"):
        return
    gateway = one(docs, "Deployment", component="gateway")
    env = container_env(docs, gateway["spec"]["template"]["spec"]["containers"][0])
    m = re.fullmatch(r"tcp://([a-z0-9-]+):(\d+)", env["WOSERVER"])
    assert m, env["WOSERVER"]
    svc = one(docs, "Service", name=m.group(1))
    write = one(docs, "StatefulSet", component="write-node")
    assert svc["spec"].get("clusterIP") != "None"
    assert selector_matches(svc["spec"]["selector"], write["spec"]["template"]["metadata"]["labels"])
    port = [p for p in svc["spec"]["ports"] if p["port"] == int(m.group(2))]
    assert port, "{} has no port {}".format(svc["metadata"]["name"], m.group(2))
    write_container = write["spec"]["template"]["spec"]["containers"][0]
    assert named_port(write_container, port[0]["targetPort"]) == int(container_env(docs, write_container)["SERVER_PORT"])


def test_scaling_read_nodes_leaves_the_gateway_pod_template_unchanged(helm):
    """`helm upgrade --set readNodes.replicas=M` must not roll the gateways: their pod template (and so its
    hash) is the same whatever the number of read nodes."""
    templates = {}
    for replicas in (1, 2, 7, 40):
        docs = helm_template(helm, ["readNodes.replicas={}".format(replicas), "mysql.rootPassword=fixed"])
        templates[replicas] = one(docs, "Deployment", component="gateway")["spec"]["template"]
        assert one(docs, "StatefulSet", component="read-node")["spec"]["replicas"] == replicas
    assert templates[1] == templates[2] == templates[7] == templates[40]


# ------------------------------------------------------------------------------ probes, volumes, security


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_probes_hit_the_ports_the_processes_serve_http_on(render, combo):
    docs = render(combo)
    containers = mishards_containers(docs)
    assert containers
    for component, c, _ in containers:
        env = container_env(docs, c)
        # The HTTP listener (gateway: admin API; node: probe port) must listen beyond the pod's loopback.
        assert env["ADMIN_HOST"] == "0.0.0.0", component
        http_port = int(env["ADMIN_PORT"])
        expected_name = "admin" if component == "gateway" else "probe"
        assert named_port(c, expected_name) == http_port
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
            get = c[probe]["httpGet"]
            assert get["path"] == path, (component, probe)
            assert named_port(c, get["port"]) == http_port, (component, probe)
        grpc_name = "grpc" if component == "gateway" else "milvus"
        assert named_port(c, grpc_name) == int(env["SERVER_PORT"])


def test_the_admin_port_stays_inside_the_cluster(render):
    docs = render("default")
    gateway = one(docs, "Deployment", component="gateway")
    labels = gateway["spec"]["template"]["metadata"]["labels"]
    for svc in find(docs, "Service"):
        if selector_matches(svc["spec"]["selector"], labels):
            for p in svc["spec"]["ports"]:
                if p["port"] == 19121 or p.get("targetPort") == "admin":
                    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP", svc["metadata"]["name"]


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_volumes_storage_wal_and_a_read_only_root(render, combo):
    docs = render(combo)
    persistence = "persistence.enabled=false" not in COMBINATIONS[combo]
    claim = "{}-mishards-storage".format(RELEASE)
    for component, c, w in mishards_containers(docs):
        pod = w["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert volumes[mounts["/tmp"]] == {"name": mounts["/tmp"], "emptyDir": {}}
        assert pod["securityContext"]["runAsUser"] == 65532  # the Dockerfile's USER
        if component == "gateway":
            assert set(mounts) == {"/tmp"}
            continue
        env = container_env(docs, c)
        storage = env["MISHARDS_STORAGE"]
        storage_volume = volumes[mounts[storage]]
        if persistence:
            assert storage_volume["persistentVolumeClaim"]["claimName"] == claim
        else:
            assert storage_volume["emptyDir"] == {}
        if component == "write-node":
            wal = mounts[storage + "/wal"]
            templates = {t["metadata"]["name"]: t for t in w["spec"].get("volumeClaimTemplates", [])}
            if persistence:
                assert wal in templates and wal not in volumes
                assert templates[wal]["spec"]["accessModes"] == ["ReadWriteOnce"]
            else:
                assert volumes[wal]["emptyDir"] == {}
    pvc = find(docs, "PersistentVolumeClaim", name=claim)
    if persistence:
        assert pvc and pvc[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    else:
        assert not pvc


def test_service_monitor_scrapes_the_gateways_and_the_nodes(render):
    docs = render("service-monitor")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = [s for s in find(docs, "Service")
                if selector_matches(monitor["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    endpoints = {e["port"]: e for e in monitor["spec"]["endpoints"]}
    assert all(e["path"] == "/metrics" for e in endpoints.values())
    scraped = set()
    for svc in selected:
        for p in svc["spec"]["ports"]:
            if p["name"] in endpoints:
                # The Service's port leads to the container port serving /metrics.
                for component, c, w in mishards_containers(docs):
                    if selector_matches(svc["spec"]["selector"], w["spec"]["template"]["metadata"]["labels"]):
                        assert named_port(c, p["targetPort"]) == int(container_env(docs, c)["ADMIN_PORT"])
                        scraped.add(component)
    assert scraped == set(MISHARDS_COMPONENTS)


def test_tracing_runs_jaeger_and_points_every_process_at_it(render):
    docs = render("tracing")
    jaeger = one(docs, "Deployment", component="jaeger")
    svc = one(docs, "Service", component="jaeger")
    assert selector_matches(svc["spec"]["selector"], jaeger["spec"]["template"]["metadata"]["labels"])
    otlp = [p for p in svc["spec"]["ports"] if p["name"] == "otlp-grpc"][0]
    for component, c, _ in mishards_containers(docs):
        env = container_env(docs, c)
        assert env["TRACER_CLASS_NAME"] == "jaeger"
        assert env["MISHARDS_OTLP_ENDPOINT"] == "http://{}:{}".format(svc["metadata"]["name"], otlp["port"])
        assert env["TRACING_SAMPLER_TYPE"] == "probabilistic" and env["TRACING_SAMPLER_PARAM"] == "0.25"
    external = render("tracing-external-collector")
    assert not find(external, "Deployment", component="jaeger")
    for _, c, _ in mishards_containers(external):
        assert container_env(external, c)["MISHARDS_OTLP_ENDPOINT"] == "http://otel.monitoring:4317"


def test_standalone_serves_the_api_from_the_write_node(render):
    docs = render("standalone-no-persistence")
    assert not workload(docs, "gateway") and not workload(docs, "read-node")
    write = one(docs, "StatefulSet", component="write-node")
    svc = one(docs, "Service", name="{}-mishards".format(RELEASE))
    assert selector_matches(svc["spec"]["selector"], write["spec"]["template"]["metadata"]["labels"])
    assert named_port(write["spec"]["template"]["spec"]["containers"][0], svc["spec"]["ports"][0]["targetPort"]) == 19530


@pytest.mark.parametrize("sets, reason", [
    (["persistence.enabled=false"], "persistence.enabled=false gives every pod its own emptyDir"),
    (["externalMysql.enabled=true", "externalMysql.ip=db"], "choose one metadata database"),
    (["mysql.enabled=false"], "no metadata database"),
    (["mysql.enabled=false", "externalMysql.enabled=true"], "externalMysql.enabled=true needs externalMysql.ip"),
    (["readNodes.replicas=0"], "readNodes.replicas must be at least 1"),
    (["gateway.settings.WOSERVER=tcp://elsewhere:19530"], "WOSERVER is set by the chart itself"),
    (["settings.SQLALCHEMY_DATABASE_URI=sqlite:////tmp/m.db"], "SQLALCHEMY_DATABASE_URI is set by the chart itself"),
    # values.schema.json: the Python Mishards' chart's name for the read nodes' count is refused, not ignored.
    (["readonly.replica=3"], "readonly"),
    (["gateway.settings.max_retry=3"], "max_retry"),
    (["readNodes.replicas=many"], "replicas"),
])
def test_values_that_cannot_work_are_refused_with_the_reason(helm, sets, reason):
    stderr = helm_template(helm, sets, expect_failure=True)
    assert reason in stderr, stderr


# ----------------------------------------------------------------------- the binary checks the settings


def config_check(mishards_bin, role, env):
    run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    run_env.update(env)
    run = subprocess.run([str(mishards_bin), "config", "check", "--for", role], env=run_env,
                         capture_output=True, text=True, timeout=60)
    applied = {}
    for line in run.stdout.splitlines():
        m = re.match(r"^(\w+) = (.*?)  # env (\w+)$", line)
        if m:
            applied[m.group(3)] = m.group(2)
    return run, applied


@pytest.mark.parametrize("combo", sorted(COMBINATIONS))
def test_each_containers_environment_passes_config_check(render, mishards_bin, combo):
    docs = render(combo)
    checked = 0
    for component, c, _ in mishards_containers(docs):
        role = "gateway" if component == "gateway" else "node"
        env = container_env(docs, c)
        # Only an input of the $(…) substitution in SQLALCHEMY_DATABASE_URI, not a setting.
        expected = set(env) - {"METADATA_DB_PASSWORD"}
        assert "$(" not in env["SQLALCHEMY_DATABASE_URI"], env["SQLALCHEMY_DATABASE_URI"]
        run, applied = config_check(mishards_bin, role, env)
        assert run.returncode == 0, "{} ({}): `mishards config check --for {}` refused the rendered env:\n{}{}".format(
            component, combo, role, run.stdout, run.stderr)
        assert "# ok: these settings are valid" in run.stdout
        unread = expected - set(applied)
        assert not unread, "{} ({}): the chart sets {} but `mishards {}` does not read them".format(
            component, combo, sorted(unread), role)
        # The password reaches the binary whole, and config check does not show it.
        password = env.get("METADATA_DB_PASSWORD")
        assert password and password not in run.stdout
        checked += 1
    assert checked >= 1
