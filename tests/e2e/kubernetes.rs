//! deploy/kubernetes/: every manifest is valid against the Kubernetes API schemas
//! (kubernetes-validate, strict, offline, for one fixed Kubernetes version), the
//! kustomize base lists them all, the pieces are wired to each other (selectors, the
//! workers' names, the Secret's keys, probes on the listening ports), the ConfigMap's
//! experiment passes the real `faultline check`, and every container's arguments are
//! accepted by the real binary its image holds. Each check is also shown to refuse a
//! planted mistake.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use faultline_tests::{bin, python};
use serde_json::Value;

/// The Kubernetes version the manifests are validated against: the oldest one they are
/// meant for (Indexed Jobs, `internalTrafficPolicy` and pod `subdomain` are all GA).
const KUBERNETES_VERSION: &str = "1.33.0";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every manifest of the directory (not the kustomization), sorted by name.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/kubernetes")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml" || e == "yml")
                && p.file_name().is_some_and(|n| n != "kustomization.yaml")
        })
        .collect();
    files.sort();
    files
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

/// `kubernetes-validate --strict` on `files`: `Err` with every problem it names. A file
/// of a kind it has no schema for is a problem too (it only warns of those).
fn validate(files: &[PathBuf]) -> Result<(), String> {
    let out = Command::new(python())
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(files)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut problems: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("INFO"))
        .map(str::to_owned)
        .collect();
    for f in files {
        let passed = format!("INFO {} passed for resource", f.display());
        if !text.lines().any(|l| l.starts_with(&passed)) {
            problems.push(format!("{}: not validated as a resource", name(f)));
        }
    }
    if out.status.success() && problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} ({})", problems.join("\n"), out.status))
    }
}

/// The YAML documents of `path`, read by PyYAML (the validator's own reader).
fn documents(path: &Path) -> Vec<Value> {
    let out = Command::new(python())
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}: {}",
        name(path),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("PyYAML's JSON")
}

/// The one resource of a manifest file (each file holds one, so a failure names it).
fn resource(file: &str) -> Value {
    let mut docs = documents(&deploy_dir().join(file));
    assert_eq!(docs.len(), 1, "{file}: one resource a file");
    docs.remove(0)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The binary an image of `faultline images build` runs as its entrypoint.
fn binary_of(image: &str) -> Option<&'static str> {
    let repo = image.rsplit_once(':').map_or(image, |(r, _)| r);
    match repo {
        "faultline/agent" => Some("faultline-agent"),
        "faultline/faultline" => Some("faultline"),
        "faultline/shop" => Some("shop"),
        _ => None,
    }
}

/// `$(NAME)`, which the kubelet expands from the container's environment, made a
/// plausible value (a documentation address) so the binary parses it.
fn expand(arg: &str) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("$(") {
        out.push_str(&rest[..start]);
        match rest[start..].find(')') {
            Some(end) => {
                out.push_str("192.0.2.1");
                rest = &rest[start + end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every container of the pod template in `doc`, with its kind of place.
fn containers(doc: &Value) -> Vec<Value> {
    let spec = &doc["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[k].as_array().cloned().unwrap_or_default())
        .collect()
}

/// Each container of `doc` (from `file`) runs a binary of this build, and that binary
/// accepts its arguments: they are given to it with `--help` after them, so clap parses
/// every flag and value (an unknown flag or a bad value fails) and then prints help
/// instead of running. `Err` names the file, the container and what the binary said.
fn arguments_accepted(file: &str, doc: &Value) -> Result<usize, String> {
    let list = containers(doc);
    if list.is_empty() {
        return Err(format!("{file}: no containers"));
    }
    for c in &list {
        let cname = c["name"].as_str().unwrap_or("?");
        let image = c["image"].as_str().unwrap_or_default();
        let binary = binary_of(image)
            .ok_or_else(|| format!("{file}: container {cname}: `{image}` is no faultline image"))?;
        let command = strings(&c["command"]);
        if !(command.is_empty() || command == [format!("/{binary}")]) {
            return Err(format!(
                "{file}: container {cname}: command {command:?} is not the image's /{binary}"
            ));
        }
        let args: Vec<String> = strings(&c["args"]).iter().map(|a| expand(a)).collect();
        let out = Command::new(bin(binary))
            .args(&args)
            .arg("--help")
            .env_remove("FAULTLINE_AGENT_TOKEN")
            .env_remove("FAULTLINE_WORKER_TOKEN")
            .output()
            .expect("run the binary");
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("Usage:") {
            return Err(format!(
                "{file}: container {cname}: `{binary} {}` is refused ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(list.len())
}

#[test]
fn every_manifest_is_valid_against_the_kubernetes_api_schemas() {
    let files = manifests();
    let names: BTreeSet<String> = files.iter().map(|f| name(f)).collect();
    for expected in [
        "agent-daemonset.yaml",
        "run-configmap.yaml",
        "run-job.yaml",
        "secret.yaml",
        "workers-job.yaml",
        "workers-service.yaml",
    ] {
        assert!(names.contains(expected), "no {expected} in {names:?}");
    }
    if let Err(problems) = validate(&files) {
        panic!(
            "deploy/kubernetes does not validate against Kubernetes {KUBERNETES_VERSION}:\n{problems}"
        );
    }
}

#[test]
fn the_validator_refuses_planted_mistakes_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let original =
        std::fs::read_to_string(deploy_dir().join("agent-daemonset.yaml")).expect("the agent");
    let planted = |file: &str, from: &str, to: &str| {
        assert!(original.contains(from), "nothing to plant at {from:?}");
        let path = dir.path().join(file);
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
        path
    };
    // A misspelt field (strict mode: no unknown properties), a value of the wrong
    // type, and a kind the API does not have.
    let cases = [
        (
            planted("misspelt.yaml", "hostPID: true", "hostPid: true"),
            "hostPid",
        ),
        (
            planted(
                "wrong-type.yaml",
                "containerPort: 7080",
                "containerPort: api",
            ),
            "containerPort",
        ),
        (
            planted("no-such-kind.yaml", "kind: DaemonSet", "kind: DaemonSett"),
            "DaemonSett",
        ),
    ];
    for (path, problem) in &cases {
        let err = validate(std::slice::from_ref(path))
            .expect_err(&format!("{} was accepted", name(path)));
        assert!(
            err.contains(&name(path)) && err.contains(problem),
            "the refusal names neither {} nor {problem}: {err}",
            name(path)
        );
    }
    // The same file unchanged passes: the refusals are the planted mistakes'.
    let fine = dir.path().join("fine.yaml");
    std::fs::write(&fine, &original).unwrap();
    validate(&[fine]).expect("the unchanged copy");
}

#[test]
fn the_kustomize_base_lists_every_manifest_in_the_faultline_namespace() {
    let kustomization = documents(&deploy_dir().join("kustomization.yaml")).remove(0);
    assert_eq!(kustomization["kind"], "Kustomization");
    assert_eq!(kustomization["namespace"], "faultline");
    let listed: BTreeSet<String> = strings(&kustomization["resources"]).into_iter().collect();
    let present: BTreeSet<String> = manifests().iter().map(|f| name(f)).collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml's resources must be exactly the manifests beside it"
    );
    // Applied one by one with `kubectl apply -f`, each lands in the same namespace.
    for file in &present {
        let doc = resource(file);
        if doc["kind"] == "Namespace" {
            assert_eq!(doc["metadata"]["name"], "faultline", "{file}");
        } else {
            assert_eq!(doc["metadata"]["namespace"], "faultline", "{file}");
        }
    }
}

/// `kubectl kustomize` (kustomize inside kubectl, offline) renders the base; the
/// rendering holds each manifest's resource once, all in the namespace, and passes the
/// validator as one stream. kubectl comes with this machine's image (`.ci/run` does not
/// install it): missing, the test fails saying so.
#[test]
fn the_kustomize_base_renders_every_resource_once_and_validates() {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(deploy_dir())
        .output()
        .unwrap_or_else(|e| panic!("kubectl is needed to render the kustomize base: {e}"));
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/kubernetes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let rendered = dir.path().join("rendered.yaml");
    std::fs::write(&rendered, &out.stdout).unwrap();
    let key = |d: &Value| {
        format!(
            "{}/{}",
            d["kind"].as_str().unwrap(),
            d["metadata"]["name"].as_str().unwrap()
        )
    };
    let mut got: Vec<String> = documents(&rendered).iter().map(key).collect();
    got.sort();
    let mut expected: Vec<String> = manifests()
        .iter()
        .flat_map(|f| documents(f))
        .map(|d| key(&d))
        .collect();
    expected.sort();
    assert_eq!(got, expected);
    for d in documents(&rendered) {
        if d["kind"] != "Namespace" {
            assert_eq!(d["metadata"]["namespace"], "faultline", "{}", key(&d));
        }
    }
    if let Err(problems) = validate(&[rendered]) {
        panic!("the rendered base does not validate:\n{problems}");
    }
}

#[test]
fn the_manifests_are_wired_to_each_other() {
    let labels = |doc: &Value| doc["spec"]["template"]["metadata"]["labels"].clone();
    let selects = |svc: &Value, pods: &Value| {
        svc["spec"]["selector"]
            .as_object()
            .expect("a selector")
            .iter()
            .all(|(k, v)| pods[k] == *v)
    };

    // The agent: on every node, in the host's PID namespace and network, probed on the
    // port it listens on at the path that needs no token, reached on its own node.
    let agent = resource("agent-daemonset.yaml");
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    assert_eq!(pod["hostNetwork"], true);
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "the agent must tolerate every taint"
    );
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    let listen = args[args.iter().position(|a| a == "--listen").unwrap() + 1].clone();
    let port = listen.rsplit_once(':').unwrap().1.parse::<u64>().unwrap();
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/health", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], port, "{probe}");
    }
    assert!(c["resources"]["requests"].is_object() && c["resources"]["limits"].is_object());
    let agent_svc = resource("agent-service.yaml");
    assert!(
        selects(&agent_svc, &labels(&agent)),
        "agent-service.yaml selects no agent pod"
    );
    assert_eq!(agent_svc["spec"]["internalTrafficPolicy"], "Local");
    assert_eq!(agent_svc["spec"]["ports"][0]["targetPort"], port);

    // The workers: an Indexed Job of N behind a headless Service, whose pod names are
    // exactly the run's --workers list, ended by a deadline.
    let workers = resource("workers-job.yaml");
    let svc = resource("workers-service.yaml");
    let job = &workers["spec"];
    assert_eq!(job["completionMode"], "Indexed");
    assert_eq!(job["parallelism"], job["completions"]);
    assert!(job["activeDeadlineSeconds"].as_u64().is_some_and(|s| s > 0));
    assert_eq!(svc["spec"]["clusterIP"], "None");
    assert!(
        selects(&svc, &labels(&workers)),
        "workers-service.yaml selects no worker pod"
    );
    let service = svc["metadata"]["name"].as_str().unwrap();
    assert_eq!(job["template"]["spec"]["subdomain"], service);
    let worker_args = strings(&job["template"]["spec"]["containers"][0]["args"]);
    let worker_port = worker_args[worker_args.iter().position(|a| a == "--listen").unwrap() + 1]
        .rsplit_once(':')
        .unwrap()
        .1
        .to_owned();
    let n = job["completions"].as_u64().unwrap();
    let expected: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "http://{}-{i}.{service}:{worker_port}",
                workers["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let run = resource("run-job.yaml");
    assert_eq!(run["spec"]["backoffLimit"], 0, "a gameday is never retried");
    let run_pod = &run["spec"]["template"]["spec"];
    assert_eq!(run_pod["restartPolicy"], "Never");
    let run_args = strings(&run_pod["containers"][0]["args"]);
    let listed = &run_args[run_args.iter().position(|a| a == "--workers").unwrap() + 1];
    assert_eq!(
        listed.split(',').collect::<Vec<_>>(),
        expected,
        "run-job.yaml's --workers must name each pod of workers-job.yaml, through the headless Service"
    );

    // Every Secret key a pod reads is in the Secret.
    let secret = resource("secret.yaml");
    let keys = secret["stringData"].as_object().unwrap();
    for (file, doc) in [
        ("agent-daemonset.yaml", &agent),
        ("workers-job.yaml", &workers),
        ("run-job.yaml", &run),
    ] {
        for c in containers(doc) {
            for env in c["env"].as_array().unwrap() {
                let r = &env["valueFrom"]["secretKeyRef"];
                if r.is_object() {
                    assert_eq!(r["name"], secret["metadata"]["name"], "{file}");
                    let key = r["key"].as_str().unwrap();
                    assert!(keys.contains_key(key), "{file}: no key {key} in the Secret");
                }
            }
        }
    }
}

#[test]
fn the_configmaps_experiment_is_the_run_jobs_file_and_passes_faultline_check() {
    let cm = resource("run-configmap.yaml");
    let run = resource("run-job.yaml");
    let pod = &run["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["configMap"]["name"] == cm["metadata"]["name"])
        .expect("the run Job mounts the ConfigMap");
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("a mount of the ConfigMap's volume");
    let args = strings(&pod["containers"][0]["args"]);
    assert_eq!(args[0], "run");
    let file = Path::new(&args[1]);
    assert_eq!(
        file.parent().unwrap(),
        Path::new(mount["mountPath"].as_str().unwrap()),
        "the run's file is not where the ConfigMap is mounted"
    );
    let key = file.file_name().unwrap().to_str().unwrap();
    let text = cm["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no {key}"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(key);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(bin("faultline"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "faultline check refuses the ConfigMap's {key}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and the same check refuses a broken copy, so it is not passing everything.
    std::fs::write(&path, text.replacen("duration =", "duraton =", 1)).unwrap();
    let out = Command::new(bin("faultline"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a misspelt key was accepted");
}

#[test]
fn only_the_agent_the_workers_and_the_run_have_containers() {
    // So that no container escapes the argument checks below.
    let with_pods: BTreeSet<String> = manifests()
        .iter()
        .map(|f| name(f))
        .filter(|f| !containers(&resource(f)).is_empty())
        .collect();
    let expected: BTreeSet<String> = ["agent-daemonset.yaml", "run-job.yaml", "workers-job.yaml"]
        .map(String::from)
        .into();
    assert_eq!(with_pods, expected);
}

#[test]
fn the_agents_arguments_are_accepted_by_faultline_agent() {
    let file = "agent-daemonset.yaml";
    arguments_accepted(file, &resource(file)).unwrap_or_else(|e| panic!("{e}"));
}

/// Needs `faultline worker` (issue 17, item 2).
#[test]
fn the_workers_arguments_are_accepted_by_faultline() {
    let file = "workers-job.yaml";
    arguments_accepted(file, &resource(file)).unwrap_or_else(|e| panic!("{e}"));
}

/// Needs `faultline run --workers` (issue 17, item 2).
#[test]
fn the_runs_arguments_are_accepted_by_faultline() {
    let file = "run-job.yaml";
    arguments_accepted(file, &resource(file)).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn an_unknown_flag_or_a_bad_value_in_a_manifest_is_refused() {
    let file = "agent-daemonset.yaml";
    let good = resource(file);
    let with_args = |args: Vec<&str>| {
        let mut doc = good.clone();
        doc["spec"]["template"]["spec"]["containers"][0]["args"] = args.into();
        doc
    };
    for (args, problem) in [
        (
            vec!["--listen", "0.0.0.0:7080", "--no-such-flag"],
            "--no-such-flag",
        ),
        (vec!["--listen", "0.0.0.0:seven"], "seven"),
        (
            vec!["--listen", "$(NODE_IP):7080", "--topolgy", "t.toml"],
            "--topolgy",
        ),
    ] {
        let err = arguments_accepted(file, &with_args(args.clone()))
            .expect_err(&format!("{args:?} was accepted"));
        assert!(err.contains(file) && err.contains(problem), "{err}");
    }
    let mut other = good.clone();
    other["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1.36".into();
    let err = arguments_accepted(file, &other).expect_err("another image was accepted");
    assert!(err.contains("busybox"), "{err}");
}
