//! The jail's forwarder: `runbooks __jail-forward SOCKET PORT -- PROGRAM [ARGS…]`, run by
//! bubblewrap as the first process of a jail with its own network namespace.
//!
//! It listens on `127.0.0.1:PORT` (and `[::1]:PORT` when the jail has IPv6) inside the jail,
//! relays every TCP connection to the egress proxy's Unix socket `SOCKET` (bind-mounted into
//! the jail, see [`super::egress`]), and runs `PROGRAM` as its child with its own standard
//! streams, environment and working directory. The caller points the proxy variables
//! (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, their lowercase twins, and `NO_PROXY` for the
//! loopback names) at `http://127.0.0.1:PORT`; the forwarder passes its environment on as it
//! is.
//!
//! Invariants, and why:
//! - **The listener is bound before the program starts**, so the program's first connection
//!   finds it.
//! - **The forwarder exits with the program's status** (128 + the signal number when a signal
//!   ended it), so the step's result is the program's. As the first process of the jail's PID
//!   namespace, its exit ends everything the program left behind, `setsid` children included.
//! - **Its own failures exit with 125** and one line on stderr (that line lands in the step's
//!   log): a port it cannot bind, a program it cannot start, wrong arguments.
//! - **It decides nothing**: every byte goes to the proxy, which applies the policy. It uses
//!   only the standard library and threads (no async runtime) so that it starts at once, and
//!   it stays small because it runs inside every jailed step.

use std::ffi::OsString;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The hidden subcommand of the `runbooks` binary that runs the forwarder.
pub const SUBCOMMAND: &str = "__jail-forward";

/// The exit status for the forwarder's own failures (as `env` and `timeout` use it).
const OWN_FAILURE: i32 = 125;

/// Stack for the relay threads: they only copy through a small buffer.
const RELAY_STACK: usize = 64 * 1024;

/// Why the forwarder could not do its job.
#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("usage: runbooks {SUBCOMMAND} SOCKET PORT -- PROGRAM [ARGS…]")]
    Usage,
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the relay thread: {0}")]
    Thread(#[source] io::Error),
    #[error("cannot start {program}: {source}")]
    Start {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot wait for {program}: {source}")]
    Wait {
        program: String,
        #[source]
        source: io::Error,
    },
}

/// Runs the forwarder with the arguments after the subcommand, and exits.
pub fn main(args: Vec<OsString>) -> ! {
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("runbooks {SUBCOMMAND}: {err}");
            std::process::exit(OWN_FAILURE)
        }
    }
}

fn run(args: Vec<OsString>) -> Result<i32, ForwardError> {
    let mut args = args.into_iter();
    let (Some(socket), Some(port), Some(dashes), Some(program)) =
        (args.next(), args.next(), args.next(), args.next())
    else {
        return Err(ForwardError::Usage);
    };
    let port: u16 = port
        .to_str()
        .and_then(|port| port.parse().ok())
        .ok_or(ForwardError::Usage)?;
    if dashes != "--" {
        return Err(ForwardError::Usage);
    }
    let socket: Arc<Path> = Arc::from(PathBuf::from(socket));

    let v4 = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        .map_err(|source| ForwardError::Bind { port, source })?;
    // IPv6 loopback, when the jail has it: a client that resolves `localhost` to ::1 first.
    let v6 = TcpListener::bind((Ipv6Addr::LOCALHOST, port)).ok();
    for listener in std::iter::once(v4).chain(v6) {
        let socket = socket.clone();
        thread::Builder::new()
            .name("accept".into())
            .spawn(move || accept(listener, socket))
            .map_err(ForwardError::Thread)?;
    }

    let name = || program.to_string_lossy().into_owned();
    let mut child = Command::new(&program)
        .args(args)
        .spawn()
        .map_err(|source| ForwardError::Start {
            program: name(),
            source,
        })?;
    let status = child.wait().map_err(|source| ForwardError::Wait {
        program: name(),
        source,
    })?;
    use std::os::unix::process::ExitStatusExt;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => OWN_FAILURE,
    })
}

/// Accepts connections for as long as the jail lives, each relayed by threads of its own.
fn accept(listener: TcpListener, socket: Arc<Path>) {
    loop {
        match listener.accept() {
            Ok((tcp, _)) => {
                let socket = socket.clone();
                let started = thread::Builder::new()
                    .stack_size(RELAY_STACK)
                    .spawn(move || relay(tcp, &socket));
                if let Err(err) = started {
                    eprintln!("runbooks {SUBCOMMAND}: cannot relay a connection: {err}");
                }
            }
            Err(err) => {
                // Out of file descriptors, most likely; a busy loop would not free any. This
                // pause is a back-off, not a wait for some event.
                eprintln!("runbooks {SUBCOMMAND}: cannot accept a connection: {err}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Relays one connection to the proxy: this thread copies towards the proxy, a second one
/// back. End of file on one side is passed on as a half close, an error closes both.
fn relay(tcp: TcpStream, socket: &Path) {
    let unix = match UnixStream::connect(socket) {
        Ok(unix) => unix,
        Err(err) => {
            eprintln!(
                "runbooks {SUBCOMMAND}: cannot reach the egress proxy at {}: {err}",
                socket.display()
            );
            return;
        }
    };
    let (Ok(tcp_back), Ok(unix_back)) = (tcp.try_clone(), unix.try_clone()) else {
        eprintln!("runbooks {SUBCOMMAND}: cannot relay a connection: out of file descriptors");
        return;
    };
    let back = thread::Builder::new()
        .stack_size(RELAY_STACK)
        .spawn(move || {
            let ended = io::copy(&mut &unix_back, &mut &tcp_back);
            finish(ended, &unix_back, &tcp_back);
        });
    if back.is_err() {
        eprintln!("runbooks {SUBCOMMAND}: cannot relay a connection: no thread");
        return;
    }
    let ended = io::copy(&mut &tcp, &mut &unix);
    finish(ended, &tcp, &unix);
}

/// Passes on the end of one direction: a half close after end of file, a full close of both
/// sockets after an error (so the other direction's thread stops too).
fn finish(ended: io::Result<u64>, from: &impl Closable, to: &impl Closable) {
    match ended {
        Ok(_) => to.close(Shutdown::Write),
        Err(_) => {
            from.close(Shutdown::Both);
            to.close(Shutdown::Both);
        }
    }
}

trait Closable {
    fn close(&self, how: Shutdown);
}

impl Closable for TcpStream {
    fn close(&self, how: Shutdown) {
        // Already closed by the peer is fine.
        let _ = self.shutdown(how);
    }
}

impl Closable for UnixStream {
    fn close(&self, how: Shutdown) {
        let _ = self.shutdown(how);
    }
}
