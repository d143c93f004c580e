//! What the live tests run against: a real Herald started in-process (SQLite, in-process
//! queue, on 127.0.0.1:0), a TCP proxy in front of it that can drop, refuse or stall
//! connections, and an HTTP receiver for its webhooks.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use herald::{
    config::{Config, Secret},
    server::{self, Running},
};
use herald_sdk::{
    Client,
    proto::{CreateApiKeyRequest, CreateTenantRequest, Role},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
    task::JoinHandle,
};

pub struct Herald {
    pub addr: SocketAddr,
    pub admin_key: String,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

/// A tenant and one key per role.
pub struct TenantKeys {
    pub tenant_id: String,
    pub publisher: String,
    pub subscriber: String,
    pub manager: String,
}

/// Herald with a fresh SQLite database; webhooks may go to plain-HTTP 127.0.0.1, tails
/// beat every second, retries come after 1 s and 2 s.
pub async fn start_herald() -> Herald {
    let dir = tempfile::tempdir().expect("temp dir");
    let admin_key = format!("sdk-test-admin-{}", std::process::id());
    let config = Config {
        listen_addr: ([127, 0, 0, 1], 0).into(),
        database_url: Secret::new(format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("herald.db").display()
        )),
        admin_key: Some(Secret::new(admin_key.clone())),
        allow_http_endpoints: true,
        heartbeat_interval_secs: 1,
        egress_allow_cidrs: vec!["127.0.0.1/32".parse().unwrap()],
        retry_schedule_secs: vec![1, 2],
        webhook_timeout_secs: 3,
        ..Config::default()
    };
    let running = server::start(config).await.expect("Herald starts");
    Herald {
        addr: running.addr,
        admin_key,
        running: Some(running),
        _dir: dir,
    }
}

impl Herald {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn admin(&self) -> Client {
        Client::connect(self.url(), &self.admin_key)
            .await
            .expect("admin client")
    }

    /// Creates tenant `id` and its keys through the SDK's admin calls.
    pub async fn tenant(&self, id: &str) -> TenantKeys {
        let admin = self.admin().await.admin();
        admin
            .create_tenant(CreateTenantRequest {
                id: id.into(),
                name: format!("Tenant {id}"),
            })
            .await
            .expect("create tenant");
        let mut keys = Vec::new();
        for role in [Role::Publisher, Role::Subscriber, Role::Manager] {
            let created = admin
                .create_api_key(CreateApiKeyRequest {
                    tenant_id: id.into(),
                    role: role as i32,
                    name: format!("{role:?}"),
                })
                .await
                .expect("create key");
            keys.push(created.secret);
        }
        TenantKeys {
            tenant_id: id.into(),
            publisher: keys[0].clone(),
            subscriber: keys[1].clone(),
            manager: keys[2].clone(),
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown_token().cancel();
        }
    }
}

/// How the proxy treats connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    /// Accepts and never answers (a hung network path).
    Stall,
}

struct ProxyState {
    mode: Mode,
    accept: Option<JoinHandle<()>>,
    connections: Vec<JoinHandle<()>>,
}

/// A TCP proxy on 127.0.0.1 in front of `target`.
pub struct Proxy {
    pub addr: SocketAddr,
    target: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            target,
            state: Arc::new(Mutex::new(ProxyState {
                mode: Mode::Forward,
                accept: None,
                connections: Vec::new(),
            })),
        };
        proxy.serve(listener);
        proxy
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn serve(&self, listener: TcpListener) {
        let state = self.state.clone();
        let target = self.target;
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mode = state.lock().unwrap().mode;
                let connection = tokio::spawn(async move {
                    if mode == Mode::Stall {
                        // Holds the socket open, silent, until aborted.
                        std::future::pending::<()>().await;
                    }
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                state.lock().unwrap().connections.push(connection);
            }
        });
        self.state.lock().unwrap().accept = Some(accept);
    }

    /// Cuts every open connection (both sides see them close).
    pub fn drop_connections(&self) {
        for connection in self.state.lock().unwrap().connections.drain(..) {
            connection.abort();
        }
    }

    /// Stops listening (connections are refused) and cuts the open ones.
    pub async fn down(&self) {
        let accept = self.state.lock().unwrap().accept.take();
        if let Some(accept) = accept {
            accept.abort();
            let _ = accept.await;
        }
        self.drop_connections();
    }

    /// Listens again on the same address.
    pub async fn up(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("rebind proxy port");
        self.serve(listener);
    }

    /// New connections hang (or forward again with `false`).
    pub fn stall(&self, on: bool) {
        self.state.lock().unwrap().mode = if on { Mode::Stall } else { Mode::Forward };
    }
}

/// A webhook as the receiver got it.
pub struct Received {
    pub parts: http::request::Parts,
    pub body: axum::body::Bytes,
}

/// An HTTP server on 127.0.0.1:0 that answers 204 to everything and keeps what it got.
pub struct Receiver {
    pub addr: SocketAddr,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>,
    _server: JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let tx = tx.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX)
                    .await
                    .unwrap_or_default();
                let _ = tx.send(Received { parts, body });
                http::StatusCode::NO_CONTENT
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            rx: tokio::sync::Mutex::new(rx),
            _server: server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next request, or a panic after `within`.
    pub async fn next(&self, within: Duration) -> Received {
        tokio::time::timeout(within, self.rx.lock().await.recv())
            .await
            .expect("a webhook arrives in time")
            .expect("receiver running")
    }
}
