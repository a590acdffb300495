#!/usr/bin/env python3
"""Checks the Helm chart the way CI does, with no helm binary and no cluster.

1. `helm lint --strict` (helm-python-sdk) with the default and the all-features values;
2. renders both, parses the rendered configuration back as TOML (it must equal the `config`
   values, and no secret may appear in the ConfigMap), renders the chart as the dependency of an
   umbrella chart (with `global` and `enabled`), and proves a schema violation is refused;
3. `kubernetes-validate --strict` and `yamllint` on the rendered YAML;
4. `checkov --framework kubernetes`, skipping only the checks listed with reasons in the chart
   README;
5. starts the real `natter` binary with the ConfigMap and environment the chart renders (pointed
   at this machine's PostgreSQL and NATS) and waits for `/readyz` 200.

Usage: python3 helm/check.py [path/to/natter binary]. Tools go into target/chart-venv.
"""
import json, os, re, shutil, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "helm", "natter")
VENV = os.path.join(ROOT, "target", "chart-venv")
OUT = os.path.join(ROOT, "target", "chart")
# Value sets: no values at all (standalone), the cluster minimum, every feature on.
SETS = ["standalone", "default", "all"]
TOOLS = ["helm-python-sdk==0.2.2", "kubernetes-validate==1.37.0", "yamllint", "checkov"]


def step(msg):
    print(f"== chart: {msg}", flush=True)


def ensure_venv():
    py = os.path.join(VENV, "bin", "python")
    marker = os.path.join(VENV, ".tools")
    if not os.path.exists(marker) or open(marker).read() != "\n".join(TOOLS):
        step("installing tools into target/chart-venv (first run takes a minute)")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([py, "-m", "pip", "install", "--quiet", *TOOLS], check=True)
        open(marker, "w").write("\n".join(TOOLS))
    return py


def in_venv(py):
    """Re-runs this script inside the venv (where helm_python imports)."""
    if os.path.realpath(sys.prefix) != os.path.realpath(VENV):
        os.execv(py, [py, __file__, *sys.argv[1:]])


def values(name):
    import helm_python as helm
    return helm.values_from_yaml(open(os.path.join(ROOT, "helm", f"ci-values-{name}.yaml")).read())


def main():
    py = ensure_venv()
    in_venv(py)
    import helm_python as helm

    os.makedirs(OUT, exist_ok=True)
    chart = helm.Chart.load(CHART)
    rendered = {}
    for name in SETS:
        vals = values(name)
        step(f"lint --strict ({name} values)")
        report = helm.lint(CHART, vals, strict=True)
        problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
        if problems:
            sys.exit(f"lint found problems: {json.dumps(problems, indent=2)}")
        step(f"render ({name} values)")
        manifests = chart.render(vals, name="natter", namespace="chat", is_install=True)
        docs = [body for path, body in sorted(manifests.items()) if path.endswith((".yaml", ".yml")) and body.strip()]
        path = os.path.join(OUT, f"{name}.yaml")
        open(path, "w").write("---\n" + "\n---\n".join(d.strip() for d in docs) + "\n")
        rendered[name] = path
        print(f"   {len(docs)} manifests -> {os.path.relpath(path, ROOT)}")

    step("the rendered config is the values' config, as TOML, without secrets")
    import tomllib, yaml  # yaml comes with checkov and yamllint
    for name, path in rendered.items():
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        configmap = next(d for d in docs if d["kind"] == "ConfigMap" and "production.toml" in d.get("data", {}))
        text = configmap["data"]["production.toml"]
        parsed = tomllib.loads(text)
        defaults = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
        expected = merged(defaults, yaml.safe_load(open(os.path.join(ROOT, "helm", f"ci-values-{name}.yaml"))))["config"]
        if not same(parsed, expected):
            sys.exit(f"{name}: the rendered config differs from the values:\n{text}")
        vals = values(name)
        for secret in [vals.get("signingKey"), vals.get("database", {}).get("url"), vals.get("nats", {}).get("url")]:
            if secret and secret in json.dumps(configmap):
                sys.exit(f"{name}: a secret reached the ConfigMap")
        print(f"   {name}: {len(parsed)} sections parse back equal")

    step("rendered as the dependency of an umbrella chart")
    umbrella = tempfile.mkdtemp()
    os.makedirs(os.path.join(umbrella, "charts"))
    shutil.copytree(CHART, os.path.join(umbrella, "charts", "natter"))
    version = yaml.safe_load(open(os.path.join(CHART, "Chart.yaml")))["version"]
    open(os.path.join(umbrella, "Chart.yaml"), "w").write(
        "apiVersion: v2\nname: platform\nversion: 0.1.0\ndependencies:\n"
        f"  - name: natter\n    version: \"{version}\"\n    condition: natter.enabled\n"
    )
    parent = helm.Chart.load(umbrella)
    manifests = parent.render(
        {"global": {"imageRegistry": "registry.example.com"}, "natter": {**values("all"), "enabled": True}},
        name="platform", namespace="chat", is_install=True,
    )
    names = [p for p, body in manifests.items() if "charts/natter/" in p and body.strip()]
    if not any(p.endswith("deployment.yaml") for p in names):
        sys.exit(f"the umbrella rendered no natter deployment: {sorted(manifests)}")
    print(f"   {len(names)} natter manifests under the umbrella")

    step("a schema violation is refused")
    for bad in [{"replicaCount": 0}, {"service": {"port": "http"}}, {"unknownKey": True}, {"nats": {"prefix": "a.b"}}]:
        try:
            chart.validate_schema({**values("default"), **bad})
        except helm.HelmValuesError:
            continue
        sys.exit(f"values {bad} passed the schema")

    bindir = os.path.join(VENV, "bin")
    for name, path in rendered.items():
        step(f"kubernetes-validate --strict ({name})")
        result = subprocess.run([os.path.join(bindir, "kubernetes-validate"), "--strict", "--quiet", path], capture_output=True, text=True)
        output = (result.stdout + result.stderr).strip()
        # Custom resources (ServiceMonitor, HTTPRoute) have no bundled schema: reported, not failed.
        failures = [l for l in output.splitlines() if "ERROR" in l or ("error" in l.lower() and "schema" not in l.lower())]
        if result.returncode != 0 and failures:
            sys.exit(output)
        print("   " + (output.replace("\n", "\n   ") if output else "valid"))

    step("yamllint")
    # 200: the dashboard's JSON, embedded in its ConfigMap, holds PromQL on single lines.
    config = "{extends: relaxed, rules: {line-length: {max: 200}, document-start: disable, indentation: {spaces: consistent, indent-sequences: whatever}}}"
    for target in [os.path.join(CHART, "values.yaml"), os.path.join(ROOT, "helm", "ci-values-all.yaml"), *rendered.values()]:
        subprocess.run([os.path.join(bindir, "yamllint"), "-s", "-d", config, target], check=True)

    step("checkov --framework kubernetes")
    readme = open(os.path.join(CHART, "README.md")).read()
    skips = re.findall(r"^\| (CKV2?_K8S_\d+) \|", readme, re.M)
    for name, path in rendered.items():
        cmd = [os.path.join(bindir, "checkov"), "--quiet", "--compact", "--framework", "kubernetes", "-f", path]
        if skips:
            cmd += ["--skip-check", ",".join(skips)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        print(result.stdout[-3000:])
        if result.returncode != 0:
            sys.exit(f"checkov failed on {name}; fix it or list the check with its reason in helm/natter/README.md")
    print(f"   skipped, with reasons in helm/natter/README.md: {', '.join(skips) or 'none'}")

    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "natter")
    for name in SETS:
        start_with_rendered_config(rendered[name], binary)
    step("ok")


def start_with_rendered_config(path, binary):
    step(f"start {os.path.relpath(binary, ROOT)} with the rendered ConfigMap and env; wait for /readyz 200")
    import yaml  # comes with checkov and yamllint

    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    config = next(d for d in docs if d["kind"] == "ConfigMap" and "production.toml" in d.get("data", {}))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    tmp = tempfile.mkdtemp()
    open(os.path.join(tmp, "production.toml"), "w").write(config["data"]["production.toml"])
    db = "natter_chart_" + os.urandom(4).hex()
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"CREATE DATABASE {db}"], check=True)
    standalone = any(i.get("name") == "NATTER_DATABASE__URL" for i in container["env"])
    step("   (standalone: SQLite on the data volume, no Secret)" if standalone else "   (cluster: PostgreSQL and NATS)")
    port = free_port()
    # The Secret, as the pod would see it mounted: files under /etc/natter/secrets.
    secrets = os.path.join(tmp, "secrets")
    os.makedirs(secrets)
    # Every key of the rendered Secret (the signing key, with the all-options values), with the
    # database and NATS pointed at this machine's.
    secret = next((d for d in docs if d["kind"] == "Secret"), None)
    for key, value in ((secret or {}).get("stringData") or {}).items():
        open(os.path.join(secrets, key), "w").write(value)
    open(os.path.join(secrets, "database-url"), "w").write(f"postgres://postgres@127.0.0.1:5432/{db}\n")
    open(os.path.join(secrets, "nats-url"), "w").write("nats://127.0.0.1:4222\n")
    env = {"PATH": os.environ.get("PATH", "")}
    data = os.path.join(tmp, "data")  # the standalone data volume
    os.makedirs(data)
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"].replace("/etc/natter/secrets", secrets).replace("/var/lib/natter", data)
    admin = free_port()
    # What the downward API would supply; loopback instead of the pod address.
    env.update({
        "NATTER_NODE__ID": "chart-check",
        "NATTER_HTTP__BIND": f"127.0.0.1:{port}",
        "NATTER_HTTP__ADMIN_BIND": f"127.0.0.1:{admin}",
        "NATTER_NATS__PREFIX": "chartcheck" + os.urandom(3).hex(),
    })
    args = [a if a != "/etc/natter/config" else tmp for a in container["args"]]
    proc = subprocess.Popen([binary, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        probe = next(c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "natter")["readinessProbe"]
        if probe["httpGet"]["port"] != "admin":
            sys.exit("the readiness probe must use the admin port")
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as r:
                    if r.status == 200:
                        print(f"   admin /readyz 200: {r.read().decode()}")
                        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as m:
                            if b"natter_build_info" not in m.read():
                                sys.exit("the admin port serves no metrics")
                        try:
                            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
                            sys.exit("the client port serves /metrics")
                        except urllib.error.HTTPError as e:
                            if e.code != 404:
                                raise
                        return
            except OSError:
                if proc.poll() is not None:
                    sys.exit(f"natter exited: {proc.stderr.read()}")
                time.sleep(0.2)
        sys.exit("natter did not become ready with the rendered configuration")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"])


def same(a, b):
    """Equal values of equal types: 15.0 is not 15 (Natter refuses a float for an integer)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def merged(base, over):
    """Helm's merge of values: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in (over or {}).items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    main()
