//! Test support: databases of both backends, and the real server on a loopback port.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use runbooks::api::actions::{StepDocument, StepsDocument};
use runbooks::api::runbooks::RunbookDocument;
use runbooks::config::Config;
use runbooks::domain::RunbookStatus;
use runbooks::engine::{Engine, EngineEvent};
use runbooks::intake::Intake;
use runbooks::server::{self, RunningServer};
use runbooks::store::{self, Store};
use runbooks::tokens;
use tokio::sync::broadcast;

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server tests create their databases on. CI runs these tests too: when the
/// server does not answer, the tests fail with a message saying so.
pub fn postgres_admin_url() -> String {
    std::env::var("RUNBOOKS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A database of its own for one test: a SQLite file in a temporary directory, or a
/// PostgreSQL database created for the test and dropped after it.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("runbooks.db").display()),
                backend,
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                static COUNTER: AtomicU32 = AtomicU32::new(0);
                let name = format!(
                    "rbtest_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::Relaxed),
                    rand::random::<u32>()
                );
                let admin = postgres_admin_url();
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "PostgreSQL is needed for this test and did not answer at {admin} \
                             (set RUNBOOKS_TEST_POSTGRES_URL): {e}"
                        )
                    });
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("creating a test database");
                let base = admin.rsplit_once('/').expect("a database URL").0;
                Self {
                    url: format!("{base}/{name}"),
                    backend,
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    pub async fn store(&self) -> Arc<dyn Store> {
        store::connect(&self.url).await.expect("opening the store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside any runtime we may block on: use a thread with its own.
        let admin = postgres_admin_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok(mut conn) =
                    <sqlx::PgConnection as sqlx::Connection>::connect(&admin).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

/// A loopback address where connections are refused: its port stays bound (not listening)
/// while the returned socket lives, so no other test in the process can take it meanwhile,
/// as one could a port found free and released.
pub fn refusing_address() -> (socket2::Socket, std::net::SocketAddr) {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("a loopback port");
    let address = socket
        .local_addr()
        .expect("its address")
        .as_socket()
        .expect("an IP address");
    (socket, address)
}

/// Creates an API token directly in the store; returns the token.
pub async fn create_token(store: &Arc<dyn Store>, orgs: &[&str]) -> String {
    let token = tokens::generate();
    let orgs: Vec<String> = orgs.iter().map(|o| o.to_string()).collect();
    store
        .create_token("test", &orgs, &tokens::hash(&token))
        .await
        .expect("creating a token");
    token
}

/// The real server, in this process, on a loopback port chosen by the OS.
pub struct TestServer {
    pub db: TestDb,
    pub server: Option<RunningServer>,
    pub base: String,
    pub store: Arc<dyn Store>,
    /// The server's engine (when a GitHub App is configured), kept past a stop: tests wait
    /// on its progress ([`TestServer::watch`]).
    pub engine: Option<Arc<Engine>>,
    /// A token for the organisation `acme-corp`.
    pub token: String,
    pub http: reqwest::Client,
}

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new(backend).await;
        let mut config = Config::for_database(&db.url);
        config.data_dir = db.dir.path().join("data");
        // Tests poll; the rate limit has a test of its own.
        config.rate_limit_per_minute = 0;
        configure(&mut config);
        let server = server::start(&config).await.expect("starting the server");
        let store = server.store.clone();
        let engine = server.engine.clone();
        let token = create_token(&store, &["acme-corp"]).await;
        Self {
            base: format!("http://{}", server.addr),
            server: Some(server),
            db,
            store,
            engine,
            token,
            http: reqwest::Client::new(),
        }
    }

    /// The engine's progress on runbook `number` from now on, for at most `timeout`: made
    /// before the first look at what a test waits for, so nothing the engine records after
    /// that look goes unannounced.
    pub fn watch(&self, number: i64, timeout: Duration) -> Watch {
        let engine = self.engine.as_ref().expect(
            "this server runs no engine (no GitHub App configured): nothing will happen to wait for",
        );
        Watch::new(&[engine], number, tokio::time::Instant::now() + timeout)
    }

    /// The REST API as the default token, typed: see [`Api`].
    pub fn api(&self) -> Api<'_> {
        self.api_as(&self.token)
    }

    /// The REST API as `token`, typed.
    pub fn api_as<'a>(&'a self, token: &'a str) -> Api<'a> {
        Api { t: self, token }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POST /api/v1/runbook with a JSON body and the default token.
    pub async fn create(&self, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/runbook"))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("sending the request")
    }

    pub async fn get(&self, number: impl std::fmt::Display) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/api/v1/runbook/{number}")))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("sending the request")
    }

    pub async fn patch(
        &self,
        number: impl std::fmt::Display,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .patch(self.url(&format!("/api/v1/runbook/{number}")))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("sending the request")
    }

    /// Waits until the server has handled every webhook delivery it stored (see
    /// [`until_handled`]).
    pub async fn until_handled(&self, within: Duration) {
        let server = self.server.as_ref().expect("the server is running");
        until_handled(&server.intake, self.store.as_ref(), within).await;
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("a clean shutdown");
        }
    }
}

/// A small crate for runbooks to change: a helper and its caller.
pub const LIB: &str =
    "pub fn old_name() -> u32 {\n    1\n}\n\npub fn caller() -> u32 {\n    old_name()\n}\n";

/// A runbook in the template layout that renames `LIB`'s helper: step 1 with two sub-steps
/// (1.1, 1.2), then step 2, each a `sh` block that changes a file.
pub const RENAME: &str = r#"Rename the helper everywhere.

## Execution Steps
### Step 1: Rename the helper
#### 1.1: Rename the definition
```sh
sed -i 's/pub fn old_name/pub fn new_name/' src/lib.rs
```
#### 1.2: Update the callers
```sh
sed -i 's/    old_name()/    new_name()/' src/lib.rs
```
### Step 2: Document it
```sh
echo "Call new_name()." >> README.md
```
"#;

/// A GitHub stand-in holding `acme-corp/backend` (default branch `main`, with `files`), on
/// which the app is installed.
pub async fn github_with_backend(files: &[(&str, &str)]) -> runbooks_standin::StandIn {
    let github = runbooks_standin::StandIn::start()
        .await
        .expect("the GitHub stand-in starts");
    github
        .create_repo("acme-corp", "backend", "main", files)
        .await
        .expect("the repository is created");
    github.install("acme-corp", &["backend"]);
    github
}

/// The server configured as the app of a GitHub stand-in (API URL, app id, key, webhook
/// secret).
pub async fn server_for(
    github: &runbooks_standin::StandIn,
    backend: Backend,
    configure: impl FnOnce(&mut Config) + Send + 'static,
) -> TestServer {
    use runbooks::config::PrivateKeySource;
    use secrecy::SecretString;
    let api_url = github.api_url();
    let app_id = github.app_id();
    let key = github.private_key_pem();
    let secret = github.webhook_secret().to_string();
    TestServer::start_with(backend, move |config| {
        config.github.api_url = api_url;
        config.github.app_id = Some(app_id);
        config.github.private_key = Some(PrivateKeySource::Inline(SecretString::from(key)));
        config.github.webhook_secrets = vec![SecretString::from(secret)];
        configure(config);
    })
    .await
}

/// A refusal of the REST API: the status and the `{error, message}` body.
#[derive(Debug)]
pub struct Refusal {
    pub status: u16,
    pub body: runbooks::http::ErrorBody,
}

impl Refusal {
    /// Asserts the status and the code; the message.
    pub fn expect(self, status: u16, code: &str) -> String {
        assert_eq!(
            (self.status, self.body.error.as_str()),
            (status, code),
            "unexpected refusal: {self:?}"
        );
        self.body.message
    }
}

/// What a typed call answers: the API's own document, or its refusal.
pub type Answer<T> = Result<T, Refusal>;

/// Refusal checks on an answer.
pub trait Refused {
    /// Asserts that the call was refused with `status` and `code`; the message.
    fn refused(self, status: u16, code: &str) -> String;
}

impl<T: std::fmt::Debug> Refused for Answer<T> {
    fn refused(self, status: u16, code: &str) -> String {
        match self {
            Ok(doc) => panic!("accepted, not refused ({status} {code}): {doc:?}"),
            Err(refusal) => refusal.expect(status, code),
        }
    }
}

/// A typed client of the test server's REST API, as one token, for tests whose
/// subject is behaviour: each call answers the API's own types (those `runbooks::client`
/// reads) or a [`Refusal`]. The wire format has tests of its own (`api.rs`, `openapi.rs`),
/// yet nothing is taken on trust here either: an accepted call must answer the status the API
/// documents for it, and a refused one exactly `{error, message}` with a message.
pub struct Api<'a> {
    t: &'a TestServer,
    token: &'a str,
}

impl Api<'_> {
    /// POST /api/v1/runbook (202).
    pub async fn create(&self, body: &serde_json::Value) -> Answer<RunbookDocument> {
        let request = self.t.http.post(self.t.url("/api/v1/runbook")).json(body);
        self.call(request, 202).await
    }

    /// GET /api/v1/runbook/<n> (200).
    pub async fn runbook(&self, number: i64) -> Answer<RunbookDocument> {
        let request = self
            .t
            .http
            .get(self.t.url(&format!("/api/v1/runbook/{number}")));
        self.call(request, 200).await
    }

    /// PATCH /api/v1/runbook/<n>, a follow-up (202).
    pub async fn follow_up(
        &self,
        number: i64,
        body: &serde_json::Value,
    ) -> Answer<RunbookDocument> {
        let url = self.t.url(&format!("/api/v1/runbook/{number}"));
        self.call(self.t.http.patch(url).json(body), 202).await
    }

    /// GET /api/v1/runbook/<n>/steps (200): the steps in plan order.
    pub async fn steps(&self, number: i64) -> Answer<Vec<StepDocument>> {
        let url = self.t.url(&format!("/api/v1/runbook/{number}/steps"));
        let doc: StepsDocument = self.call(self.t.http.get(url), 200).await?;
        assert_eq!(doc.runbook_number, number);
        Ok(doc.steps)
    }

    /// POST /api/v1/runbook/<n>/<action> (`execute`, `retry`, `cancel`, `pull_requests`;
    /// 202), with a body or none.
    pub async fn act(
        &self,
        number: i64,
        action: &str,
        body: Option<serde_json::Value>,
    ) -> Answer<RunbookDocument> {
        let url = self.t.url(&format!("/api/v1/runbook/{number}/{action}"));
        let mut request = self.t.http.post(url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.call(request, 202).await
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        accepted: u16,
    ) -> Answer<T> {
        let response = request
            .bearer_auth(self.token)
            .send()
            .await
            .expect("sending the request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("reading the answer");
        if (200..300).contains(&status) {
            assert_eq!(status, accepted, "unexpected status; body: {text}");
            return Ok(serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("not the API's document ({e}): {text}")));
        }
        let raw: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a {status} without a JSON body ({e}): {text}"));
        let keys: Vec<&String> = raw
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, ["error", "message"], "error body shape: {text}");
        let body: runbooks::http::ErrorBody = serde_json::from_value(raw).expect("an error body");
        assert!(
            !body.message.is_empty(),
            "an error without a message: {text}"
        );
        Err(Refusal { status, body })
    }
}

/// Waits until no stored webhook delivery is left unhandled, looking again each time the
/// intake has handled one, or fails after `within`.
pub async fn until_handled(intake: &Intake, store: &dyn Store, within: Duration) {
    // Followed before looking: a delivery handled after the look is announced.
    let mut handled = intake.handled();
    let deadline = tokio::time::Instant::now() + within;
    while !store.unfinished_deliveries(1).await.unwrap().is_empty() {
        match tokio::time::timeout_at(deadline, handled.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the webhook intake is gone"),
            Err(_) => panic!("webhook deliveries were not handled within {within:?}"),
        }
    }
}

/// The engine's progress on one runbook, followed until a deadline (see
/// [`TestServer::watch`]): a test looks at what it waits for, and when that is not there yet,
/// waits for the engine's next event on the runbook and looks again.
pub struct Watch {
    events: Vec<broadcast::Receiver<EngineEvent>>,
    number: i64,
    deadline: tokio::time::Instant,
}

impl Watch {
    /// The progress of every one of `engines` (replicas on one database) on runbook `number`,
    /// until `deadline`.
    pub fn new(engines: &[&Arc<Engine>], number: i64, deadline: tokio::time::Instant) -> Self {
        Self {
            events: engines.iter().map(|engine| engine.subscribe()).collect(),
            number,
            deadline,
        }
    }

    /// Waits until an engine has done something more to the runbook; `false` once the
    /// deadline has passed.
    pub async fn next(&mut self) -> bool {
        use broadcast::error::RecvError;
        loop {
            let any = futures_util::future::select_all(
                self.events.iter_mut().map(|events| Box::pin(events.recv())),
            );
            match tokio::time::timeout_at(self.deadline, any).await {
                Err(_) => return false,
                Ok((Ok(event), ..)) if event.runbook.get() != self.number => {}
                // Fallen behind: what was missed is in the store, looked at next.
                Ok((Ok(_) | Err(RecvError::Lagged(_)), ..)) => return true,
                Ok((Err(RecvError::Closed), ..)) => panic!("the engine is gone"),
            }
        }
    }
}

/// Reads the runbook document until `done` holds, looking again after each of the engine's
/// steps on it, or fails after a deadline. A runbook not there yet (one a comment starts) is
/// waited for too.
pub async fn wait_for(
    t: &TestServer,
    number: i64,
    what: &str,
    done: impl Fn(&RunbookDocument) -> bool,
) -> RunbookDocument {
    let mut progress = t.watch(number, std::time::Duration::from_secs(60));
    loop {
        match t.api().runbook(number).await {
            Ok(doc) if done(&doc) => return doc,
            answer => assert!(
                progress.next().await,
                "runbook {number} never reached {what}; last: {answer:?}"
            ),
        }
    }
}

/// A runbook number, for tests that call the store or the engine directly.
pub fn rn(number: i64) -> runbooks::domain::RunbookNumber {
    runbooks::domain::RunbookNumber::try_from(number).expect("a runbook number is positive")
}

/// Waits until the runbook's status is one of `statuses`.
pub async fn wait_for_status(
    t: &TestServer,
    number: i64,
    statuses: &[RunbookStatus],
) -> RunbookDocument {
    let what: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    wait_for(t, number, &what.join(" or "), |doc| {
        statuses.contains(&doc.status)
    })
    .await
}

/// A minimal valid creation body.
pub fn minimal(prompt: &str) -> serde_json::Value {
    serde_json::json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": prompt})
}

/// Reads a response's status and JSON body.
pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

/// Asserts an error response: status, the exact `{error, message}` shape, and the code.
pub async fn expect_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> (reqwest::header::HeaderMap, String) {
    let headers = response.headers().clone();
    let (got, body) = json(response).await;
    assert_eq!(got, status, "unexpected status; body: {body}");
    let object = body.as_object().expect("an error object");
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        ["error", "message"],
        "error body shape: {body}"
    );
    assert_eq!(body["error"], code, "error code; body: {body}");
    let message = body["message"].as_str().expect("a message").to_string();
    assert!(!message.is_empty());
    (headers, message)
}

/// Sends only the head of a JSON request whose declared body is 2 MiB, over the limit, as
/// the server's token, from a raw client: the server answers before reading the body, and
/// the test reads that answer instead of racing it with an upload (reqwest may end in a
/// reset). Its status and body.
pub async fn declared_too_large(t: &TestServer, method: &str, path: &str) -> (u16, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        t.token,
        2 * 1024 * 1024
    );
    raw_exchange(&t.base, &head, &[]).await
}

/// Writes a request head and body chunks over a plain TCP connection, then reads the
/// answer: its status and body.
pub async fn raw_exchange(base: &str, head: &str, chunks: &[String]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in chunks {
        // The server may answer and close before it has read everything.
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    // The server closes the connection after refusing the body.
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = find_complete_response(&answer) {
            answer.truncate(end);
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// The length of a complete HTTP/1.1 response with a content-length, once it has arrived.
fn find_complete_response(bytes: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(bytes).ok()?;
    let head_end = text.find("\r\n\r\n")? + 4;
    let length: usize = text[..head_end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })?
        .parse()
        .ok()?;
    (bytes.len() >= head_end + length).then_some(head_end + length)
}

/// A `runbooks serve` child process, killed if the test ends early.
pub struct Served {
    child: std::process::Child,
    pub addr: String,
}

impl Served {
    pub fn start(db: &TestDb, extra_env: &[(&str, &str)]) -> Self {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_runbooks"));
        command
            .arg("serve")
            .env("RUNBOOKS_LISTEN", "127.0.0.1:0")
            .env("RUNBOOKS_DATABASE_URL", &db.url)
            .env("RUNBOOKS_DATA_DIR", db.dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in extra_env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("starting runbooks serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(std::time::Duration::from_secs(15))
            .expect("the server says where it listens");
        Self { child, addr }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Declares a test that runs once per backend: `both_backends!(name, async_fn)` makes
/// `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::support::Backend::Postgres).await;
                }
            }
        )*
    };
}
