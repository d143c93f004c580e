//! The production packaging, checked without Docker: `docker-compose.yml` (services, the
//! replicas' configuration read the way Herald reads it, URLs, ports, persistence, health
//! checks, the webhook network), the `Dockerfile` (non-root, port) and `.dockerignore`
//! (the build context keeps the whole workspace).
//!
//! Compose's `${VAR…}` interpolation is applied with [`interpolate`], then each replica's
//! `HERALD_*` variables go through [`load_config`], that is Herald's own loader
//! (`Config::load_from`), which denies unknown keys and checks values.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Format, Toml},
};
use herald::config::Config;
use ipnet::IpNet;
use serde_norway::Value;

/// What an operator sets before `docker compose up` (the file requires the admin key).
const ADMIN_KEY: (&str, &str) = ("HERALD_ADMIN_KEY", "compose-test-admin-key-0123456789");

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(name: &str) -> String {
    let path = root().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// docker-compose.yml with its `<<` merge keys applied, as Compose reads it.
fn compose() -> Value {
    let mut doc: Value = serde_norway::from_str(&read("docker-compose.yml"))
        .unwrap_or_else(|e| panic!("docker-compose.yml is not valid YAML: {e}"));
    doc.apply_merge()
        .expect("docker-compose.yml merge keys apply");
    doc
}

fn services(doc: &Value) -> BTreeMap<String, Value> {
    doc["services"]
        .as_mapping()
        .expect("docker-compose.yml has services")
        .iter()
        .map(|(k, v)| (k.as_str().expect("service name").to_string(), v.clone()))
        .collect()
}

/// The services built from this repository's Dockerfile: the Herald replicas.
fn heralds(doc: &Value) -> BTreeMap<String, Value> {
    services(doc)
        .into_iter()
        .filter(|(_, s)| {
            let build = &s["build"];
            build.as_str() == Some(".") || build["context"].as_str() == Some(".")
        })
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => panic!("expected a string, got {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(items) => items.iter().map(text).collect(),
        Value::Null => Vec::new(),
        other => vec![text(other)],
    }
}

/// A service's environment (mapping or `KEY=value` list), values as written.
fn environment(name: &str, service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(map) => map
            .iter()
            .map(|(k, v)| {
                let key = k.as_str().expect("environment key").to_string();
                // Compose wants strings: an unquoted `true` or `on` is a YAML boolean.
                let value = match v {
                    Value::String(_) | Value::Number(_) => text(v),
                    other => panic!("{name}: environment {key} is {other:?}; quote it"),
                };
                (key, value)
            })
            .collect(),
        Value::Sequence(items) => items
            .iter()
            .map(|item| {
                let item = text(item);
                let (k, v) = item
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{name}: environment entry {item} has no value"));
                (k.to_string(), v.to_string())
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("{name}: environment is {other:?}"),
    }
}

/// Compose's interpolation: `$$`, `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}`,
/// `${NAME:?error}`, `${NAME?error}`, `${NAME:+alt}`, `${NAME+alt}`. An error is what
/// Compose would refuse to start with.
fn interpolate(s: &str, vars: &BTreeMap<&str, &str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {s}"))?;
            let expr = &after[..end];
            rest = &after[end + 1..];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            let value = vars.get(name).copied();
            let non_empty = value.filter(|v| !v.is_empty());
            let piece = if op.is_empty() {
                value.unwrap_or("").to_string()
            } else if let Some(default) = op.strip_prefix(":-") {
                non_empty.unwrap_or(default).to_string()
            } else if let Some(default) = op.strip_prefix('-') {
                value.unwrap_or(default).to_string()
            } else if let Some(message) = op.strip_prefix(":?") {
                non_empty
                    .ok_or_else(|| format!("required variable {name} is missing: {message}"))?
                    .to_string()
            } else if let Some(message) = op.strip_prefix('?') {
                value
                    .ok_or_else(|| format!("required variable {name} is missing: {message}"))?
                    .to_string()
            } else if let Some(alt) = op.strip_prefix(":+") {
                non_empty.map_or("", |_| alt).to_string()
            } else if let Some(alt) = op.strip_prefix('+') {
                value.map_or("", |_| alt).to_string()
            } else {
                return Err(format!("invalid interpolation ${{{expr}}} in {s}"));
            };
            out.push_str(&piece);
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                out.push('$');
            } else {
                out.push_str(vars.get(&rest[..end]).copied().unwrap_or(""));
            }
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn interpolated(
    env: &BTreeMap<String, String>,
    vars: &BTreeMap<&str, &str>,
) -> Result<BTreeMap<String, String>, String> {
    env.iter()
        .map(|(k, v)| Ok((k.clone(), interpolate(v, vars)?)))
        .collect()
}

/// Herald's configuration from these environment variables alone, read by Herald's own
/// loader (`Config::load_from`, which `Config::load` calls with the process environment).
fn load_config(env: &BTreeMap<String, String>) -> Result<Config, String> {
    Config::load_from(None, env.clone()).map_err(|e| e.to_string())
}

/// A replica's configuration, as the operator of the README runs it.
fn herald_config(name: &str, service: &Value, extra: &[(&str, &str)]) -> Config {
    let vars: BTreeMap<&str, &str> = [ADMIN_KEY]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let env =
        interpolated(&environment(name, service), &vars).unwrap_or_else(|e| panic!("{name}: {e}"));
    load_config(&env).unwrap_or_else(|e| panic!("{name}: not a valid Herald configuration: {e}"))
}

/// `(published host port, container port)` of a service's `ports`.
fn ports(name: &str, service: &Value) -> Vec<(Option<u16>, u16)> {
    let parse = |p: &str| -> u16 {
        p.parse()
            .unwrap_or_else(|_| panic!("{name}: port {p} is not a single port"))
    };
    let Some(list) = service["ports"].as_sequence() else {
        return Vec::new();
    };
    list.iter()
        .map(|p| match p {
            Value::Mapping(_) => (
                p["published"].as_str().map(parse).or_else(|| {
                    p["published"]
                        .as_u64()
                        .map(|n| u16::try_from(n).expect("port"))
                }),
                u16::try_from(p["target"].as_u64().expect("ports target")).expect("port"),
            ),
            _ => {
                let spec = text(p);
                let spec = spec.split('/').next().unwrap_or_default();
                let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                (parts.get(1).map(|h| parse(h)), parse(parts[0]))
            }
        })
        .collect()
}

/// The named volume mounted at `target` in a service (short or long syntax).
fn volume_at(name: &str, service: &Value, target: &str) -> Option<String> {
    service["volumes"].as_sequence()?.iter().find_map(|v| {
        let (source, at) = match v {
            Value::Mapping(_) => (text(&v["source"]), text(&v["target"])),
            _ => {
                let spec = text(v);
                let mut parts = spec.split(':');
                let source = parts.next().unwrap_or_default().to_string();
                let at = parts
                    .next()
                    .unwrap_or_else(|| panic!("{name}: volume {spec} has no target"))
                    .to_string();
                (source, at)
            }
        };
        (at == target).then_some(source)
    })
}

fn declared_volumes(doc: &Value) -> BTreeSet<String> {
    doc["volumes"]
        .as_mapping()
        .map(|m| m.keys().map(text).collect())
        .unwrap_or_default()
}

/// The networks a service is on (`default` when it names none).
fn networks_of(service: &Value) -> BTreeSet<String> {
    match &service["networks"] {
        Value::Sequence(items) => items.iter().map(text).collect(),
        Value::Mapping(map) => map.keys().map(text).collect(),
        _ => BTreeSet::from(["default".to_string()]),
    }
}

fn network_subnets(doc: &Value, network: &str) -> Vec<IpNet> {
    doc["networks"][network]["ipam"]["config"]
        .as_sequence()
        .map(|configs| {
            configs
                .iter()
                .filter_map(|c| c["subnet"].as_str())
                .map(|s| s.parse().unwrap_or_else(|e| panic!("subnet {s}: {e}")))
                .collect()
        })
        .unwrap_or_default()
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn depends_healthy(name: &str, service: &Value, on: &str) {
    assert_eq!(
        service["depends_on"][on]["condition"].as_str(),
        Some("service_healthy"),
        "{name} must wait for {on} to be healthy"
    );
}

#[test]
fn compose_has_postgres_redis_two_replicas_and_a_receiver() {
    let doc = compose();
    let all = services(&doc);
    let image = |s: &str| all.get(s).and_then(|s| s["image"].as_str()).unwrap_or("");
    assert!(
        image("postgres").starts_with("postgres:16"),
        "postgres: {}",
        image("postgres")
    );
    assert!(
        image("redis").starts_with("redis:7"),
        "redis: {}",
        image("redis")
    );

    let replicas = heralds(&doc);
    assert!(
        replicas.len() >= 2,
        "at least two Herald replicas, found {:?}",
        replicas.keys()
    );
    for name in replicas.keys() {
        assert!(
            name.starts_with("herald-"),
            "replica {name} should be named herald-N"
        );
    }
    // One configuration for every replica.
    let envs: BTreeSet<_> = replicas
        .iter()
        .map(|(name, s)| environment(name, s))
        .collect();
    assert_eq!(envs.len(), 1, "the replicas' environments differ");

    let receiver = all.get("receiver").expect("a receiver service");
    assert!(
        image("receiver").starts_with("node:"),
        "receiver: {}",
        image("receiver")
    );
    let mounted = receiver["volumes"]
        .as_sequence()
        .expect("receiver mounts the example")
        .iter()
        .map(text)
        .find(|v| v.starts_with("./examples/keygen-receiver:"))
        .expect("receiver mounts ./examples/keygen-receiver");
    assert!(
        mounted.ends_with(":ro"),
        "mount the example read-only: {mounted}"
    );
    let command = strings(&receiver["command"]).join(" ");
    for file in ["package.json", "package-lock.json", "server.js"] {
        assert!(root().join("examples/keygen-receiver").join(file).exists());
    }
    assert!(
        command.contains("node server.js"),
        "receiver command: {command}"
    );
    let env = environment("receiver", receiver);
    assert_eq!(env.get("HOST").map(String::as_str), Some("0.0.0.0"));
    assert!(env.contains_key("KEYGEN_PUBLIC_KEY"));
}

#[test]
fn compose_herald_environment_is_herald_configuration() {
    let doc = compose();
    for (name, service) in heralds(&doc) {
        let env = environment(&name, &service);
        for key in env.keys() {
            assert!(
                key.starts_with("HERALD_"),
                "{name}: {key} is not a Herald key"
            );
        }
        // Every key deserialises into Config (unknown keys are refused there) …
        let config = herald_config(&name, &service, &[]);
        assert_eq!(
            config.admin_key.as_ref().map(|k| k.expose().to_string()),
            Some(ADMIN_KEY.1.to_string())
        );
        assert!(config.run_migrations, "{name}: migrations run at start-up");
        assert!(
            !config.allow_http_endpoints,
            "{name}: https only by default"
        );
        let demo = herald_config(&name, &service, &[("HERALD_ALLOW_HTTP_ENDPOINTS", "true")]);
        assert!(demo.allow_http_endpoints, "{name}: the demo switch works");

        // … and the file refuses to start without an admin key.
        let err = interpolated(&env, &BTreeMap::new()).unwrap_err();
        assert!(err.contains("HERALD_ADMIN_KEY"), "{err}");

        // The check has teeth: a misspelt key is refused by name.
        let mut typo = interpolated(&env, &[ADMIN_KEY].into_iter().collect()).unwrap();
        typo.insert("HERALD_LISTEN_ADR".into(), "0.0.0.0:1".into());
        let err = load_config(&typo).unwrap_err();
        assert!(err.contains("listen_adr"), "{err}");
    }
}

#[test]
fn compose_urls_point_at_postgres_and_redis() {
    let doc = compose();
    let all = services(&doc);
    let postgres = &all["postgres"];
    for password in [None, Some("s3cret-Pa55word")] {
        let extra: Vec<(&str, &str)> = password
            .map(|p| ("POSTGRES_PASSWORD", p))
            .into_iter()
            .collect();
        let vars: BTreeMap<&str, &str> = extra.iter().copied().collect();
        let pg_env = interpolated(&environment("postgres", postgres), &vars).unwrap();
        for (name, service) in heralds(&doc) {
            let config = herald_config(&name, &service, &extra);
            let db = url::Url::parse(config.database_url.expose()).unwrap();
            assert!(
                matches!(db.scheme(), "postgres" | "postgresql"),
                "{name}: {db}"
            );
            assert_eq!(db.host_str(), Some("postgres"), "{name}: {db}");
            assert_eq!(db.port().unwrap_or(5432), 5432, "{name}: {db}");
            assert_eq!(
                Some(db.username()),
                pg_env.get("POSTGRES_USER").map(|s| s.as_str())
            );
            assert_eq!(
                db.password(),
                pg_env.get("POSTGRES_PASSWORD").map(|s| s.as_str())
            );
            assert_eq!(
                Some(db.path().trim_start_matches('/')),
                pg_env.get("POSTGRES_DB").map(|s| s.as_str())
            );

            let redis = config.redis_url.as_ref().expect("redis_url is set");
            let redis = url::Url::parse(redis.expose()).unwrap();
            assert_eq!(redis.scheme(), "redis", "{name}: {redis}");
            assert_eq!(redis.host_str(), Some("redis"), "{name}: {redis}");
            assert_eq!(redis.port().unwrap_or(6379), 6379, "{name}: {redis}");

            depends_healthy(&name, &service, "postgres");
            depends_healthy(&name, &service, "redis");
        }
    }
}

#[test]
fn compose_publishes_the_listen_port() {
    let doc = compose();
    let mut host_ports = BTreeSet::new();
    for (name, service) in heralds(&doc) {
        let config = herald_config(&name, &service, &[]);
        let listen = config.listen_addr;
        assert!(
            listen.ip().is_unspecified(),
            "{name}: listen on every interface in a container, not {listen}"
        );
        let published = ports(&name, &service);
        assert!(!published.is_empty(), "{name} publishes its port");
        for (host, container) in published {
            assert_eq!(container, listen.port(), "{name}: container port");
            let host = host.unwrap_or_else(|| panic!("{name}: give a fixed host port"));
            assert!(
                host_ports.insert(host),
                "{name}: host port {host} used twice"
            );
        }
        let check = strings(&service["healthcheck"]["test"]).join(" ");
        assert!(
            check.contains(&format!("/dev/tcp/127.0.0.1/{}", listen.port())),
            "{name}: the health check probes the listen port: {check}"
        );
    }
}

#[test]
fn compose_redis_and_postgres_persist() {
    let doc = compose();
    let all = services(&doc);
    let volumes = declared_volumes(&doc);

    let redis = &all["redis"];
    let command = strings(&redis["command"]);
    let appendonly = command.iter().position(|a| a == "--appendonly");
    assert_eq!(
        appendonly
            .and_then(|i| command.get(i + 1))
            .map(String::as_str),
        Some("yes"),
        "redis runs with --appendonly yes: {command:?}"
    );
    let data = volume_at("redis", redis, "/data").expect("redis keeps /data on a volume");
    assert!(volumes.contains(&data), "volume {data} is declared");
    let check = strings(&redis["healthcheck"]["test"]).join(" ");
    assert!(
        check.contains("redis-cli") && check.contains("ping"),
        "{check}"
    );

    let postgres = &all["postgres"];
    let data = volume_at("postgres", postgres, "/var/lib/postgresql/data")
        .expect("postgres keeps its data on a volume");
    assert!(volumes.contains(&data), "volume {data} is declared");
    let check = strings(&postgres["healthcheck"]["test"]).join(" ");
    assert!(check.contains("pg_isready"), "{check}");
}

#[test]
fn compose_webhooks_reach_the_receiver_and_not_the_data_stores() {
    let doc = compose();
    let all = services(&doc);
    for (name, service) in heralds(&doc) {
        let allowed = herald_config(&name, &service, &[]).egress_allow_cidrs;
        // The receiver is on a network whose subnet the allowlist covers …
        let receiver_ok = networks_of(&all["receiver"]).iter().any(|net| {
            let subnets = network_subnets(&doc, net);
            !subnets.is_empty()
                && subnets
                    .iter()
                    .all(|s| allowed.iter().any(|a| a.contains(s)))
        });
        assert!(
            receiver_ok,
            "{name}: the receiver's network is allowlisted: {allowed:?}"
        );
        assert!(
            networks_of(&service)
                .intersection(&networks_of(&all["receiver"]))
                .next()
                .is_some(),
            "{name} shares a network with the receiver"
        );
        // … and PostgreSQL and Redis are on no allowlisted network.
        for store in ["postgres", "redis"] {
            for net in networks_of(&all[store]) {
                for subnet in network_subnets(&doc, &net) {
                    assert!(
                        !allowed.iter().any(|a| overlaps(a, &subnet)),
                        "{store} is on {net} ({subnet}), which webhooks may reach"
                    );
                }
            }
        }
    }
}

/// The Dockerfile's instructions (continuations joined, comments dropped), split into stages.
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut pending = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (instruction, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push((instruction, args.trim().to_string()));
    }
    stages
}

#[test]
fn dockerfile_runs_unprivileged_on_the_default_port() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "a multi-stage build");
    let build = stages[..stages.len() - 1].concat();
    assert!(
        build
            .iter()
            .any(|(i, a)| i == "RUN" && a.contains("cargo build --release -p herald --locked")),
        "the builder runs `cargo build --release -p herald --locked`"
    );

    let runtime = stages.last().unwrap();
    let get = |name: &str| -> Vec<&String> {
        runtime
            .iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a)
            .collect()
    };
    let from = get("FROM");
    assert!(
        from[0].starts_with("debian:") && from[0].contains("slim"),
        "{from:?}"
    );

    let user = get("USER");
    let user = user.last().expect("the runtime stage sets USER");
    let name = user.split(':').next().unwrap_or_default();
    assert!(!matches!(name, "" | "root" | "0"), "USER {user} is root");

    let default_port = Config::default().listen_addr.port();
    let exposed: Vec<u16> = get("EXPOSE")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|p| p.trim_end_matches("/tcp").parse().expect("EXPOSE port"))
        .collect();
    assert_eq!(exposed, vec![default_port], "EXPOSE Herald's default port");

    // ENV HERALD_* is Herald configuration too, listening on the exposed port.
    let env: BTreeMap<String, String> = get("ENV")
        .iter()
        .flat_map(|a| a.split_whitespace())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV KEY=value");
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect();
    let config = load_config(&env).unwrap_or_else(|e| panic!("Dockerfile ENV: {e}"));
    assert_eq!(config.listen_addr.port(), default_port);
    assert!(
        config.listen_addr.ip().is_unspecified(),
        "{}",
        config.listen_addr
    );

    assert_eq!(get("ENTRYPOINT"), [&r#"["herald"]"#.to_string()]);
    assert_eq!(get("CMD"), [&r#"["serve"]"#.to_string()]);
}

/// Whether `pattern` (a .dockerignore line) matches `path` or one of its parent folders.
fn ignore_matches(pattern: &str, path: &str) -> bool {
    fn segment(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => segment(&p[1..], s) || (!s.is_empty() && segment(p, &s[1..])),
            (Some(b'?'), Some(_)) => segment(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => segment(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn segments(p: &[&str], s: &[&str]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(&"**") => (0..=s.len()).any(|i| segments(&p[1..], &s[i..])),
            Some(first) => {
                !s.is_empty()
                    && segment(first.as_bytes(), s[0].as_bytes())
                    && segments(&p[1..], &s[1..])
            }
        }
    }
    let pattern: Vec<&str> = pattern
        .trim_start_matches("./")
        .trim_matches('/')
        .split('/')
        .collect();
    let path: Vec<&str> = path.split('/').collect();
    (1..=path.len()).any(|n| segments(&pattern, &path[..n]))
}

fn ignored(patterns: &[String], path: &str) -> bool {
    let mut out = false;
    for p in patterns {
        match p.strip_prefix('!') {
            Some(p) if ignore_matches(p, path) => out = false,
            None if ignore_matches(p, path) => out = true,
            _ => {}
        }
    }
    out
}

fn files_under(dir: &Path, rel: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if matches!(name.as_str(), "target" | "node_modules" | ".git") {
            continue;
        }
        let rel = format!("{rel}{name}");
        if entry.file_type().unwrap().is_dir() {
            files_under(&entry.path(), &format!("{rel}/"), out);
        } else {
            out.push(rel);
        }
    }
}

#[test]
fn dockerignore_keeps_the_workspace_in_the_build_context() {
    let patterns: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    let members: Vec<String> = Figment::from(Toml::file(root().join("Cargo.toml")))
        .extract_inner("workspace.members")
        .expect("the root Cargo.toml lists the workspace members");
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".to_string()];
    for dir in members.iter().map(String::as_str).chain(["proto"]) {
        files_under(&root().join(dir), &format!("{dir}/"), &mut needed);
    }
    assert!(needed.len() > 10, "found the workspace's files: {needed:?}");
    for file in &needed {
        assert!(
            !ignored(&patterns, file),
            ".dockerignore drops {file}, which the build needs"
        );
    }
    for junk in [
        "target/release/herald",
        ".git/HEAD",
        "examples/keygen-receiver/node_modules/x",
    ] {
        assert!(ignored(&patterns, junk), ".dockerignore keeps {junk}");
    }
}
