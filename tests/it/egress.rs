//! The egress path end to end, with the real parts: a real bubblewrap jail with its own
//! network namespace, the real `runbooks` binary as the jail's forwarder, the real egress
//! proxy on a Unix socket bind-mounted into the jail, and real loopback servers outside it.
//!
//! The jailed commands are bash scripts that speak to the proxy through bash's `/dev/tcp`
//! (curl is not assumed to be installed), using the proxy address from `HTTPS_PROXY` as a
//! real client would. Each test shows what a step would see: what it reaches, what it is
//! refused and how that is told, and the exit status it ends with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use runbooks::agent::egress::{EgressProxy, NetworkPolicy, parse_allow_hosts};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const BWRAP: &str = "/usr/bin/bwrap";

/// Where the binary and the proxy socket appear inside the jail.
const JAIL_BINARY: &str = "/run/runbooks/runbooks";
const JAIL_SOCKET: &str = "/run/runbooks/egress.sock";

/// The forwarder's port inside the jail (its own network namespace: no clash with anything).
const JAIL_PORT: u16 = 3128;

/// A hang (something in the jail outliving the forwarder and holding its output open) turns
/// into a failure after this long; a passing run takes a fraction of a second.
const HANG: Duration = Duration::from_secs(60);

fn bwrap() -> &'static str {
    assert!(
        Path::new(BWRAP).exists(),
        "these tests need bubblewrap at {BWRAP} (apt-get install bubblewrap)"
    );
    BWRAP
}

/// A proxy on a socket in a fresh temp dir, and the receiving end of its refusals.
struct Proxy {
    _dir: tempfile::TempDir,
    proxy: EgressProxy,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proxy {
    fn start(policy: NetworkPolicy, deny: Vec<SocketAddr>) -> Proxy {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (tx, lines) = mpsc::unbounded_channel();
        let proxy = EgressProxy::start(
            &dir.path().join("egress.sock"),
            Arc::new(policy),
            Arc::new(deny),
            tx,
        )
        .expect("the proxy starts");
        Proxy {
            _dir: dir,
            proxy,
            lines,
        }
    }

    /// Every line the proxy has told so far (the jail has ended: nothing more is coming).
    fn told(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Ok(line) = self.lines.try_recv() {
            lines.push(line);
        }
        lines
    }
}

/// Runs `script` with bash in a jail with its own network namespace, behind the forwarder
/// and the proxy, with `vars` in its environment. Returns when the jail has ended and its
/// output is closed.
async fn jailed(socket: &Path, script: &str, vars: &[(&str, String)]) -> Output {
    let proxy_url = format!("http://127.0.0.1:{JAIL_PORT}");
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_runbooks"));
    let mut command = tokio::process::Command::new(bwrap());
    command
        .args(["--unshare-all", "--die-with-parent", "--new-session"])
        .args(["--ro-bind", "/usr", "/usr"])
        .args(["--symlink", "usr/bin", "/bin"])
        .args(["--symlink", "usr/lib", "/lib"])
        .args(["--symlink", "usr/lib64", "/lib64"])
        .args(["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"])
        .arg("--ro-bind")
        .arg(&binary)
        .arg(JAIL_BINARY)
        .arg("--bind")
        .arg(socket)
        .arg(JAIL_SOCKET)
        .args(["--", JAIL_BINARY, "__jail-forward", JAIL_SOCKET])
        .arg(JAIL_PORT.to_string())
        .args(["--", "bash", "-c", script])
        .env_clear()
        .env("PATH", "/usr/bin")
        .env("LC_ALL", "C.UTF-8");
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env(name, &proxy_url);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        command.env(name, "localhost,127.0.0.1,::1");
    }
    command
        .envs(vars.iter().map(|(name, value)| (*name, value)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("bubblewrap starts");
    tokio::time::timeout(HANG, child.wait_with_output())
        .await
        .expect("the jail did not end: something in it outlived the forwarder, or waited forever")
        .expect("the jail's output is read")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A loopback TCP server outside the jail that answers every line with `echo: LINE`.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = format!("echo: {line}\n");
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A tiny HTTP origin outside the jail: answers one request with `hello from the origin`
/// and hands over the request head it received.
async fn http_origin() -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let addr = listener.local_addr().expect("its address");
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let mut stream = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match stream.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let body = "hello from the origin\n";
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.get_mut().write_all(answer.as_bytes()).await;
        let _ = stream.get_mut().shutdown().await;
        let _ = seen_tx.send(head);
    });
    (addr, seen_rx)
}

/// A listener that no connection may ever reach; checked after the jail ended (a connection
/// that reached it would wait in its queue).
fn forbidden_listener() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    listener.set_nonblocking(true).expect("non-blocking");
    listener
}

fn assert_never_reached(listener: &std::net::TcpListener) {
    match listener.accept() {
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!("the forbidden listener was reached from {peer}"),
        Err(err) => panic!("checking the forbidden listener: {err}"),
    }
}

/// Bash functions for the jailed scripts: `proxy_open` opens fd 3 to the proxy named by
/// `HTTPS_PROXY`; `answer` reads the status line into `$status` and, unless a tunnel was
/// opened (then it stops there), the last line of the answer (the body of a refusal) into
/// `$last`.
const HELPERS: &str = r#"
set -u
proxy=${HTTPS_PROXY#http://}
proxy_open() { exec 3<>"/dev/tcp/${proxy%:*}/${proxy##*:}"; }
answer() {
    IFS= read -r status <&3; status=${status%$'\r'}
    last='(a tunnel)'
    case $status in
        *' 200 Connection established') ;;
        *) while IFS= read -r line <&3; do last=${line%$'\r'}; done ;;
    esac
    exec 3<&-
}
"#;

#[tokio::test]
async fn a_jailed_step_reaches_listed_hosts_through_the_proxy_and_nothing_else() {
    let echo = echo_server().await;
    let (origin, origin_seen) = http_origin().await;
    let forbidden = forbidden_listener();
    let forbidden_addr = forbidden.local_addr().expect("its address");

    // The forbidden listener stands for the server itself: listed by mistake, but denied.
    let rules = parse_allow_hosts(&format!("{echo}, {origin}, {forbidden_addr}"))
        .expect("the allow list parses");
    let mut proxy = Proxy::start(NetworkPolicy::Allowlist(rules), vec![forbidden_addr]);

    let script = format!(
        r#"{HELPERS}
# Through the proxy to the listed echo server.
proxy_open
printf 'CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n' "$ECHO" "$ECHO" >&3
IFS= read -r status <&3; IFS= read -r blank <&3
printf 'ping\n' >&3
IFS= read -r reply <&3
exec 3<&-
echo "allowed: ${{status%$'\r'}} / $reply"

# Plain HTTP through the proxy, with proxy credentials that must stay at the proxy.
proxy_open
printf 'GET http://%s/greeting HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n' "$ORIGIN" "$ORIGIN" >&3
answer
echo "http: $status / $last"

# Straight to the forbidden listener: the jail's network has no way out.
if (exec 4<>"/dev/tcp/127.0.0.1/$FORBIDDEN_PORT") 2>/dev/null; then
    echo "direct: connected"
else
    echo "direct: no way"
fi

# Through the proxy to the forbidden listener, and to a host that is not listed.
proxy_open
printf 'CONNECT 127.0.0.1:%s HTTP/1.1\r\n\r\n' "$FORBIDDEN_PORT" >&3
answer
echo "denied: $status / $last"
proxy_open
printf 'CONNECT registry.npmjs.org:443 HTTP/1.1\r\n\r\n' >&3
answer
echo "unlisted: $status / $last"

# Something that tries to outlive the step, holding the step's output open.
setsid sleep 600 &
exit 7
"#
    );
    let output = jailed(
        proxy.proxy.path(),
        &script,
        &[
            ("ECHO", echo.to_string()),
            ("ORIGIN", origin.to_string()),
            ("FORBIDDEN_PORT", forbidden_addr.port().to_string()),
        ],
    )
    .await;

    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert_eq!(
        stdout,
        format!(
            "allowed: HTTP/1.1 200 Connection established / echo: ping\n\
             http: HTTP/1.1 200 OK / hello from the origin\n\
             direct: no way\n\
             denied: HTTP/1.1 403 Forbidden / runbooks: connection to {forbidden_addr} refused: \
             {forbidden_addr} is the runbooks server's own address\n\
             unlisted: HTTP/1.1 403 Forbidden / runbooks: connection to registry.npmjs.org:443 \
             refused: not in RUNBOOKS_AGENT_ALLOW_HOSTS\n"
        ),
        "stderr: {stderr}"
    );
    // The step's status is the script's; the sleeper died with the jail (or reading the
    // output to its end would have hung).
    assert_eq!(output.status.code(), Some(7), "stderr: {stderr}");

    assert_eq!(
        proxy.told(),
        [
            format!(
                "blocked {forbidden_addr}: {forbidden_addr} is the runbooks server's own address"
            ),
            "blocked registry.npmjs.org:443: not in RUNBOOKS_AGENT_ALLOW_HOSTS".to_string(),
        ]
    );
    let head = origin_seen.await.expect("the origin saw a request");
    assert_eq!(
        head,
        format!("GET /greeting HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n")
    );
    assert_never_reached(&forbidden);
}

#[tokio::test]
async fn open_mode_reaches_no_loopback_or_metadata_address() {
    let forbidden = forbidden_listener();
    let forbidden_addr = forbidden.local_addr().expect("its address");
    let mut proxy = Proxy::start(NetworkPolicy::Open, vec![]);
    let script = format!(
        r#"{HELPERS}
for target in "127.0.0.1:$FORBIDDEN_PORT" "localhost:$FORBIDDEN_PORT" 169.254.169.254:80; do
    proxy_open
    printf 'CONNECT %s HTTP/1.1\r\n\r\n' "$target" >&3
    answer
    echo "$status / $last"
done
"#
    );
    let output = jailed(
        proxy.proxy.path(),
        &script,
        &[("FORBIDDEN_PORT", forbidden_addr.port().to_string())],
    )
    .await;
    let stdout = text(&output.stdout);
    let port = forbidden_addr.port();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}\nstderr: {}", text(&output.stderr));
    assert_eq!(
        lines[0],
        format!(
            "HTTP/1.1 403 Forbidden / runbooks: connection to 127.0.0.1:{port} refused: \
             127.0.0.1 is a loopback address"
        )
    );
    // `localhost` resolves (outside the jail) to a loopback address of either family.
    assert!(
        lines[1].starts_with(&format!(
            "HTTP/1.1 403 Forbidden / runbooks: connection to localhost:{port} refused: "
        )) && lines[1].ends_with("is a loopback address"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with(
            "HTTP/1.1 403 Forbidden / runbooks: connection to 169.254.169.254:80 refused: \
             169.254.169.254 is a link-local address"
        ),
        "{}",
        lines[2]
    );
    assert_eq!(output.status.code(), Some(0));
    let told = proxy.told();
    assert_eq!(told.len(), 3, "{told:?}");
    assert_eq!(
        told[0],
        format!("blocked 127.0.0.1:{port}: 127.0.0.1 is a loopback address")
    );
    assert!(
        told[1].starts_with(&format!("blocked localhost:{port}: ")),
        "{told:?}"
    );
    assert!(
        told[2].starts_with("blocked 169.254.169.254:80: "),
        "{told:?}"
    );
    assert_never_reached(&forbidden);
}

#[tokio::test]
async fn the_forwarder_exits_as_its_program_did() {
    let proxy = Proxy::start(NetworkPolicy::Open, vec![]);
    let socket = proxy.proxy.path();

    let killed = jailed(socket, "kill -TERM $$", &[]).await;
    assert_eq!(killed.status.code(), Some(128 + 15), "{killed:?}");

    let fine = jailed(socket, "echo fine", &[]).await;
    assert_eq!(text(&fine.stdout), "fine\n");
    assert_eq!(fine.status.code(), Some(0));
}

#[tokio::test]
async fn the_forwarder_says_what_it_could_not_do() {
    let proxy = Proxy::start(NetworkPolicy::Open, vec![]);
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_runbooks"));

    // A program that does not exist: 125 and a line naming it.
    let output = tokio::process::Command::new(bwrap())
        .args(["--unshare-all", "--die-with-parent", "--new-session"])
        .args(["--ro-bind", "/usr", "/usr"])
        .args(["--symlink", "usr/bin", "/bin"])
        .args(["--symlink", "usr/lib", "/lib"])
        .args(["--symlink", "usr/lib64", "/lib64"])
        .args(["--proc", "/proc", "--dev", "/dev"])
        .arg("--ro-bind")
        .arg(&binary)
        .arg(JAIL_BINARY)
        .arg("--bind")
        .arg(proxy.proxy.path())
        .arg(JAIL_SOCKET)
        .args([
            "--",
            JAIL_BINARY,
            "__jail-forward",
            JAIL_SOCKET,
            "3128",
            "--",
            "/no/such/program",
        ])
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .await
        .expect("bubblewrap runs");
    assert_eq!(output.status.code(), Some(125), "{output:?}");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("runbooks __jail-forward: cannot start /no/such/program:"),
        "{stderr}"
    );

    // Wrong arguments: 125 and the usage, without a jail (nothing is bound or started).
    let usage = tokio::process::Command::new(&binary)
        .args(["__jail-forward", "/tmp/x.sock", "not-a-port", "--", "true"])
        .output()
        .await
        .expect("the binary runs");
    assert_eq!(usage.status.code(), Some(125));
    assert!(
        text(&usage.stderr).contains("usage: runbooks __jail-forward SOCKET PORT -- PROGRAM"),
        "{usage:?}"
    );
    assert!(usage.stdout.is_empty(), "{usage:?}");
}
