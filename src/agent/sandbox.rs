//! What every agent process runs inside: a scrubbed environment, its own process group, a
//! deadline, resource limits and a bounded output buffer; the jail ([`super::jail`]) when
//! one is configured; and a path confinement check for agents that open files themselves.
//!
//! The environment guarantees that the engine's secrets (the app's private key, the webhook
//! secret, installation tokens, the model API key, the database URL) never reach an agent,
//! that an agent and everything it started is gone when its time is up, and that a chatty
//! agent cannot exhaust memory. Each run gets a fresh private directory outside the working
//! tree for its HOME and TMPDIR, removed afterwards. What the jail adds (its own filesystem
//! view, processes and network) is described in [`super::jail`].
//!
//! Every run also says what CPU time it used ([`Finished::cpu`]): the command and everything
//! it started that ended by the end of the run (killed at the deadline included), counted by
//! the kernel as processes are reaped. An accountant process between the server and the
//! command reaps them all, the jail's init included (see [`accounting`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::egress::EgressProxy;
use super::jail::{Jail, RunDirs};

/// How long to keep reading output after the command exited and its process group was
/// killed. Only a process that left the group (`setsid`) can still hold the output pipe open
/// then; we stop waiting for it rather than hang the step.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// PATH when the engine itself has none (it is not a secret, so the engine's own is passed on:
/// agent CLIs are often installed in a user's bin directory).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Parts of variable names that mark a secret. Callers may add variables to a sandboxed
/// command, but never one named like this: a mistake there would hand a credential to
/// whatever the runbook runs.
const SECRET_MARKERS: [&str; 8] = [
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PRIVATE_KEY",
    "API_KEY",
    "CREDENTIAL",
    "DATABASE_URL",
];

/// Whether an environment variable name looks like it carries a secret.
pub fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    SECRET_MARKERS.iter().any(|marker| upper.contains(marker))
}

/// Whether `jail` can be used on this machine: it runs `true` in it, with its real
/// arguments (namespaces, mounts, limits, and the egress forwarder when the network policy
/// needs one). The answer is the reason it cannot, for the operator.
pub async fn probe(jail: &Jail) -> Result<(), String> {
    let tree = tempfile::Builder::new()
        .prefix("runbooks-probe-")
        .tempdir()
        .map_err(|e| format!("could not create a directory to try the jail in: {e}"))?;
    let run = SandboxCommand::new("true", tree.path())
        .timeout(Duration::from_secs(20))
        .jail(jail)
        .run()
        .await
        .map_err(|e| e.to_string())?;
    if run.exit.success() {
        Ok(())
    } else {
        Err(format!(
            "bubblewrap {}: {}",
            run.exit,
            run.output.text().trim()
        ))
    }
}

/// A command to run in the sandbox. Built with chained calls, run with [`Self::run`].
#[derive(Debug, Clone)]
pub struct SandboxCommand {
    program: OsString,
    args: Vec<OsString>,
    cwd: PathBuf,
    stdin: Vec<u8>,
    env: BTreeMap<String, OsString>,
    timeout: Duration,
    output_cap: usize,
    jail: Jail,
    /// The tree is shown read-only (in a jail; unjailed nothing can enforce it).
    read_only_tree: bool,
    /// A file the command may write for the caller: the variable naming it, and its name in
    /// the run's private /tmp.
    collect: Option<(String, String)>,
}

/// The most bytes of a collected file read back (see [`SandboxCommand::collect_file`]).
pub const COLLECTED_FILE_CAP: u64 = 1024 * 1024;

/// How a sandboxed command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited by itself with this code.
    Code(i32),
    /// A signal ended it (not our timeout): e.g. the OOM killer, or the command killed itself.
    Signal(i32),
    /// It ran out of time and its process group was killed.
    TimedOut,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            // Neither a code nor a signal cannot happen for a reaped child on Unix.
            (None, None) => Exit::Code(-1),
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => write!(f, "was killed by signal {signal}"),
            Exit::TimedOut => f.write_str("ran out of time and was stopped"),
        }
    }
}

/// The result of a sandboxed run.
#[derive(Debug, Clone)]
pub struct Finished {
    pub exit: Exit,
    /// The tail of stdout and stderr, interleaved as the command wrote them.
    pub output: Output,
    /// The process id of the command, which is also its process group id.
    pub pid: u32,
    /// The file asked for with [`SandboxCommand::collect_file`]: `None` when the command did
    /// not write it, the reason when it is refused.
    pub collected: Option<Result<Vec<u8>, String>>,
    /// CPU time (user and system) of the command and of every process it started that was
    /// waited for: a shell's commands, and in a jail everything in it (bubblewrap's own init
    /// reaps orphans, so their time adds up into bubblewrap's). A process still running when
    /// the group is killed at the end, and never waited for, is not counted.
    pub cpu: Duration,
}

impl Finished {
    /// [`Finished::cpu`] in whole milliseconds.
    pub fn cpu_ms(&self) -> u64 {
        u64::try_from(self.cpu.as_millis()).unwrap_or(u64::MAX)
    }
}

/// The last bytes of a command's output, at most the cap, and how many came before them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    tail: Vec<u8>,
    dropped: u64,
}

impl Output {
    /// Bytes the command wrote that were not kept (the head of its output).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The kept bytes as text, invalid UTF-8 replaced, with a note when the head was dropped.
    pub fn text(&self) -> String {
        let mut kept: &[u8] = &self.tail;
        if self.dropped > 0 {
            // The cut may fall inside a multi-byte character: start at the next whole one.
            let skip = kept
                .iter()
                .take(3)
                .take_while(|b| (**b & 0b1100_0000) == 0b1000_0000)
                .count();
            kept = &kept[skip..];
            format!(
                "[… {} earlier bytes of output not kept …]\n{}",
                self.dropped + skip as u64,
                String::from_utf8_lossy(kept)
            )
        } else {
            String::from_utf8_lossy(kept).into_owned()
        }
    }
}

/// A byte buffer that keeps the last `cap` bytes pushed into it, in amortised linear time.
struct Tail {
    buf: Vec<u8>,
    cap: usize,
    dropped: u64,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            dropped: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim only when twice over the cap, so each byte is moved at most once or twice.
        if self.buf.len() > self.cap.saturating_mul(2).max(8192) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.cap {
            let excess = self.buf.len() - self.cap;
            self.buf.drain(..excess);
            self.dropped += excess as u64;
        }
    }

    fn finish(mut self) -> Output {
        self.trim();
        Output {
            tail: self.buf,
            dropped: self.dropped,
        }
    }
}

/// The whole process group of a running command. Dropping it kills the group, so a step
/// whose future is dropped (the runbook was cancelled, the engine shuts down) leaves nothing
/// running behind.
struct ProcessGroup {
    pgid: Option<rustix::process::Pid>,
}

impl ProcessGroup {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // ESRCH (nothing left in the group) is the normal case after a clean exit.
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The accountant: a process between the server and the command that reaps everything the
/// command leaves behind, so that `wait4` on it counts all of their CPU time.
///
/// Why: the kernel adds a process's CPU time to its parent's only when the parent reaps it.
/// A shell reaps its commands, and bubblewrap's init reaps what runs in the jail, but the
/// outer bubblewrap exits as soon as the jailed command has, without reaping its init: the
/// jail's time would be lost. The accountant is a child subreaper (orphans come to it, the
/// jail's init among them) and reaps until its descendants are gone.
///
/// The spawned child forks (in `pre_exec`, before exec): the new child goes on to exec the
/// command, in the process group the spawned child made (whose id is the accountant's pid,
/// kept from reuse while the accountant lives); the accountant leaves that group for the
/// server's, so that killing the group (the deadline, a cancel) spares it and it can reap
/// what was killed. When the command exits, the accountant kills what is left in its group,
/// as the server does, reaps what ends within [`accounting::REAP_GRACE_SECS`] (a process that
/// left the group, `setsid`, is not waited for longer), and exits as the command did (its
/// code, or its signal raised again). It dies with the server (`PR_SET_PDEATHSIG`), and the
/// command with it, as bubblewrap's `--die-with-parent` has it do.
mod accounting {
    use std::io;

    /// Seconds the accountant waits for the last processes after the command exits.
    pub(super) const REAP_GRACE_SECS: libc::c_uint = 1;

    /// The accountant's exit code for its own failures.
    const OWN_FAILURE: libc::c_int = 125;

    extern "C" fn wake(_: libc::c_int) {}

    /// Forks: returns in the child, which then execs the command; never returns in the
    /// accountant. Called between fork and exec: async-signal-safe calls only.
    pub(super) fn split() -> io::Result<()> {
        // SAFETY: raw system calls with valid arguments; see the module's documentation.
        unsafe {
            let server = libc::getppid();
            let server_group = libc::getpgid(server);
            if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            let accountant = libc::getpid();
            match libc::fork() {
                -1 => Err(io::Error::last_os_error()),
                0 => {
                    // The command: it dies with the accountant.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                    if libc::getppid() != accountant {
                        libc::_exit(OWN_FAILURE);
                    }
                    Ok(())
                }
                command => account(command, server, server_group),
            }
        }
    }

    /// The accountant's life; see the module's documentation.
    unsafe fn account(command: libc::pid_t, server: libc::pid_t, server_group: libc::pid_t) -> ! {
        // SAFETY: raw system calls with valid arguments; see the module's documentation.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != server || libc::setpgid(0, server_group) != 0 {
                libc::kill(-libc::getpid(), libc::SIGKILL);
                libc::_exit(OWN_FAILURE);
            }
            // It needs no file: holding the output pipe (or std's exec-error pipe) open would
            // keep the server waiting.
            if libc::syscall(libc::SYS_close_range, 0, libc::c_uint::MAX, 0) != 0 {
                for fd in 0..4096 {
                    libc::close(fd);
                }
            }
            let mut status: libc::c_int = 0;
            loop {
                let mut reaped_status: libc::c_int = 0;
                let pid = libc::waitpid(-1, &mut reaped_status, 0);
                if pid == command {
                    status = reaped_status;
                    break;
                }
                if pid == -1 && *libc::__errno_location() != libc::EINTR {
                    break;
                }
            }
            // What the command left in its group goes, as the server would have it; what
            // ends soon is reaped (and counted).
            libc::kill(-libc::getpid(), libc::SIGKILL);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = wake as *const () as libc::sighandler_t;
            libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
            libc::alarm(REAP_GRACE_SECS);
            while libc::waitpid(-1, std::ptr::null_mut(), 0) > 0 {}
            if libc::WIFSIGNALED(status) {
                let signal = libc::WTERMSIG(status);
                let limit = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &limit);
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, signal);
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::kill(libc::getpid(), signal);
                libc::_exit(128 + signal);
            }
            libc::_exit(libc::WEXITSTATUS(status))
        }
    }
}

/// The command's first process (the accountant, see [`accounting`]), until it is reaped.
///
/// We wait for it to exit without reaping it (a pidfd becomes readable; it stays a zombie),
/// so its process group id cannot be reused while the group is killed, then reap it with
/// `wait4`, which hands back the CPU time of it and of everything it waited for. (Tokio's
/// `Child::wait` reaps without that figure, and `getrusage(RUSAGE_CHILDREN)` would mix in
/// every other step of the server.) Dropped unreaped (a cancelled step), it is reaped by a
/// thread of its own once the kill has landed, so no zombie is left behind.
struct Leader {
    pid: rustix::process::Pid,
    /// `None` where the kernel has no pidfds (before Linux 5.3): then a blocking thread waits.
    pidfd: Option<AsyncFd<OwnedFd>>,
    reaped: AtomicBool,
}

impl Leader {
    fn new(pid: rustix::process::Pid) -> Self {
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK)
            .ok()
            .and_then(|fd| {
                // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same until
                // the AsyncFd is dropped.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }.ok()
            });
        Self {
            pid,
            pidfd,
            reaped: AtomicBool::new(false),
        }
    }

    /// Waits until the process has exited, leaving it to be reaped.
    async fn exited(&self) -> io::Result<()> {
        match &self.pidfd {
            // Readiness is never cleared: once exited, it stays exited.
            Some(pidfd) => pidfd.readable().await.map(drop),
            None => {
                let pid = self.pid;
                tokio::task::spawn_blocking(move || {
                    use rustix::process::{WaitId, WaitIdOptions, waitid};
                    loop {
                        match waitid(
                            WaitId::Pid(pid),
                            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                        ) {
                            Err(rustix::io::Errno::INTR) => continue,
                            other => return other.map(drop).map_err(io::Error::from),
                        }
                    }
                })
                .await
                .map_err(io::Error::other)?
            }
        }
    }

    /// Reaps the exited process: how it ended, and the CPU time it and what it waited for
    /// used. Call after [`Self::exited`], so it does not block.
    fn reap(&self) -> io::Result<(ExitStatus, Duration)> {
        use std::os::unix::process::ExitStatusExt;
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is plain data, for which all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: both pointers are to live locals of the right types; the pid is our own
            // child's, not yet reaped (so not reused).
            let reaped = unsafe { libc::wait4(self.pid.as_raw_pid(), &mut status, 0, &mut usage) };
            if reaped == -1 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err);
            }
            self.reaped.store(true, Ordering::SeqCst);
            let time = |t: libc::timeval| {
                Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
                    + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
            };
            return Ok((
                ExitStatus::from_raw(status),
                time(usage.ru_utime) + time(usage.ru_stime),
            ));
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if !self.reaped.load(Ordering::SeqCst) {
            let pid = self.pid.as_raw_pid();
            // The group is being killed: the wait is short, but not for an async thread.
            std::thread::spawn(move || {
                // SAFETY: waitpid with a null status pointer is allowed; the pid is our
                // unreaped child.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            });
        }
    }
}

impl SandboxCommand {
    /// A command that runs `program` in `cwd`, with no input, a 10-minute deadline and 64 KiB
    /// of output kept.
    pub fn new(program: impl Into<OsString>, cwd: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            cwd: cwd.into(),
            stdin: Vec::new(),
            env: BTreeMap::new(),
            timeout: Duration::from_secs(600),
            output_cap: 64 * 1024,
            jail: Jail::default(),
            read_only_tree: false,
            collect: None,
        }
    }

    /// Shows the working directory read-only in the jail: the command may read the tree but
    /// change nothing in it (its HOME and /tmp stay writable).
    pub fn read_only_tree(mut self) -> Self {
        self.read_only_tree = true;
        self
    }

    /// Lets the command hand back a file: `variable` names a fresh path in the run's private
    /// /tmp, and what the command wrote there is read back into [`Finished::collected`]
    /// before the directory is removed. The file is read only when it is a regular file of
    /// its own (not a link, not a FIFO or device, not a hard link to anything else) and at
    /// most [`COLLECTED_FILE_CAP`] bytes: what a hostile command leaves there must not make
    /// the server read anything else, or wait.
    pub fn collect_file(mut self, variable: impl Into<String>, name: impl Into<String>) -> Self {
        self.collect = Some((variable.into(), name.into()));
        self
    }

    /// The jail to run in (by default none: a scrubbed environment and a process group).
    pub fn jail(mut self, jail: &Jail) -> Self {
        self.jail = jail.clone();
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// What the command reads on standard input (then end of file).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = input.into();
        self
    }

    /// Adds a variable to the command's otherwise scrubbed environment. Names that look like
    /// secrets (see [`looks_secret`]) are refused when the command runs.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<OsString>) -> Self {
        self.env.insert(name.into(), value.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many bytes of stdout and stderr (together) to keep: the last ones.
    pub fn output_cap(mut self, bytes: usize) -> Self {
        self.output_cap = bytes;
        self
    }

    /// The environment the command sees: nothing of the engine's but PATH, plus a private
    /// HOME and TMPDIR, a fixed locale and terminal, the proxy variables when the jail's
    /// network goes through the egress proxy, the variables the operator chose to pass
    /// (`RUNBOOKS_AGENT_ENV`), and the caller's additions.
    ///
    /// No `GIT_AUTHOR_*` / `GIT_COMMITTER_*` and no git identity in HOME: commits are made by
    /// the engine with the app's bot identity, and a `git commit` by the agent fails loudly
    /// rather than producing a commit attributed to someone else.
    fn environment(&self, home: &Path, tmp: &Path) -> io::Result<BTreeMap<String, OsString>> {
        if let Some(name) = self.env.keys().find(|name| looks_secret(name)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("refusing to pass {name} to an agent process: it looks like a secret"),
            ));
        }
        let path = std::env::var_os("PATH")
            .filter(|path| !path.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.into());
        let base: [(&str, OsString); 8] = [
            ("PATH", path),
            ("HOME", home.into()),
            ("TMPDIR", tmp.into()),
            ("LANG", "C.UTF-8".into()),
            ("LC_ALL", "C.UTF-8".into()),
            ("TERM", "dumb".into()),
            ("NO_COLOR", "1".into()),
            // Never wait for a password on a terminal nobody watches.
            ("GIT_TERMINAL_PROMPT", "0".into()),
        ];
        // Later entries win: the operator's pass-through over the defaults, the caller's
        // additions over everything.
        let mut env: BTreeMap<String, OsString> = base
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        env.extend(self.jail.proxy_env());
        env.extend(
            self.jail
                .pass_env
                .iter()
                .map(|var| (var.name.clone(), var.value.clone())),
        );
        env.extend(self.env.clone());
        Ok(env)
    }

    /// Runs the command to completion or to its deadline.
    ///
    /// The command starts in a process group of its own. When it exits, runs out of time, or
    /// this future is dropped, the whole group is killed with SIGKILL: nothing an agent
    /// started (a dev server, a watcher) outlives its step. Stdout and stderr share one pipe,
    /// so the kept output interleaves them as a terminal would.
    ///
    /// Errors are the engine's own (the working tree is missing, `fork` failed); anything the
    /// command does is reported in [`Finished`].
    pub async fn run(&self) -> io::Result<Finished> {
        // The run's private directory: HOME, TMPDIR and the egress socket, outside the tree,
        // readable by the server's user only, gone when this returns.
        let private = tempfile::Builder::new()
            .prefix("runbooks-agent-")
            .tempdir()?;
        let (home_dir, tmp_dir) = (private.path().join("home"), private.path().join("tmp"));
        std::fs::create_dir(&home_dir)?;
        std::fs::create_dir(&tmp_dir)?;
        let socket = private.path().join("egress.sock");
        let (refusals_tx, mut refusals) = tokio::sync::mpsc::unbounded_channel::<String>();
        // Dropped (stopping the proxy and its connections) when this returns.
        let _proxy = if self.jail.uses_proxy() {
            Some(EgressProxy::start(
                &socket,
                std::sync::Arc::new(self.jail.network.clone()),
                std::sync::Arc::new(self.jail.deny.clone()),
                refusals_tx,
            )?)
        } else {
            drop(refusals_tx);
            None
        };
        let dirs = RunDirs {
            tree: &self.cwd,
            tree_read_only: self.read_only_tree,
            home: &home_dir,
            tmp: &tmp_dir,
            proxy_socket: self.jail.uses_proxy().then_some(socket.as_path()),
        };
        let (home, tmp) = self.jail.home_and_tmp(&dirs);
        let mut env = self.environment(&home, &tmp)?;
        if let Some((variable, name)) = &self.collect {
            env.insert(variable.clone(), tmp.join(name).into_os_string());
        }

        let (reader, writer) = io::pipe()?;
        let (stdin_reader, stdin_writer) = io::pipe()?;
        let (program, args) = self.jail.invocation(&self.program, &self.args, &dirs);
        // std's Command, not tokio's: the child is waited for and reaped here ([`Leader`]),
        // and tokio's would try to reap (or kill, on drop) a pid it no longer owns.
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(env)
            .stdin(Stdio::from(stdin_reader))
            .stdout(Stdio::from(writer.try_clone()?))
            .stderr(Stdio::from(writer));
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
            let limits = self.jail.limits;
            // SAFETY: the closures run in the child between fork and exec; they only make raw
            // system calls (setrlimit; fork, prctl, setpgid, waitpid, kill, sigaction, alarm,
            // close_range, _exit), which are async-signal-safe, and allocate nothing.
            unsafe {
                command.pre_exec(move || limits.apply());
                command.pre_exec(accounting::split);
            }
        }
        let child = command.spawn().map_err(|err| {
            io::Error::new(
                err.kind(),
                format!(
                    "could not start {} in {}: {err}",
                    self.program.to_string_lossy(),
                    self.cwd.display()
                ),
            )
        })?;
        // The command object holds our copies of the pipes' child ends; they must be closed,
        // or the output's read end would never see end of file.
        drop(command);
        let pid = child.id();
        let leader_pid = rustix::process::Pid::from_raw(pid as i32)
            .ok_or_else(|| io::Error::other("the command started without a process id"))?;
        let mut group = ProcessGroup {
            pgid: Some(leader_pid),
        };
        let leader = Leader::new(leader_pid);

        {
            let input = self.stdin.clone();
            let mut stdin =
                tokio::net::unix::pipe::Sender::from_owned_fd(OwnedFd::from(stdin_writer))?;
            // A command that never reads its input must not block us: write from a task, and
            // ignore a closed pipe (the command exited or does not care).
            tokio::spawn(async move {
                let _ = stdin.write_all(&input).await;
                let _ = stdin.shutdown().await;
            });
        }

        let mut reader = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
        let mut tail = Tail::new(self.output_cap);
        let mut chunk = vec![0u8; 16 * 1024];
        let deadline = Instant::now() + self.timeout;
        let mut open = true;
        let mut proxying = self.jail.uses_proxy();
        let finished_in_time = {
            let exited = leader.exited();
            tokio::pin!(exited);
            loop {
                tokio::select! {
                    result = &mut exited => {
                        result?;
                        break true;
                    }
                    read = reader.read(&mut chunk), if open => match read {
                        Ok(0) => open = false,
                        Ok(n) => tail.push(&chunk[..n]),
                        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                        Err(err) => return Err(err),
                    },
                    // What the egress proxy refused, named in the step's log where it happened.
                    line = refusals.recv(), if proxying => match line {
                        Some(line) => tail.push(format!("[runbooks] {line}\n").as_bytes()),
                        None => proxying = false,
                    },
                    () = tokio::time::sleep_until(deadline) => break false,
                }
            }
        };
        // The leader is not reaped yet, so the group id is still its own: nothing else can be
        // hit by this kill.
        group.kill();
        if !finished_in_time {
            leader.exited().await?;
        }
        let (status, cpu) = leader.reap()?;
        let exit = if finished_in_time {
            Exit::from_status(status)
        } else {
            Exit::TimedOut
        };
        if open {
            let drain_until = Instant::now() + DRAIN_GRACE;
            loop {
                match tokio::time::timeout_at(drain_until, reader.read(&mut chunk)).await {
                    Ok(Ok(0)) | Err(_) => break,
                    Ok(Ok(n)) => tail.push(&chunk[..n]),
                    Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                    Ok(Err(err)) => return Err(err),
                }
            }
        }
        while let Ok(line) = refusals.try_recv() {
            tail.push(format!("[runbooks] {line}\n").as_bytes());
        }
        let collected = self
            .collect
            .as_ref()
            .and_then(|(_, name)| read_collected(&tmp_dir.join(name)));
        drop(private);
        Ok(Finished {
            exit,
            output: tail.finish(),
            pid,
            collected,
            cpu,
        })
    }
}

/// Reads a file a command left for the caller, refusing anything but a regular file of its
/// own of at most [`COLLECTED_FILE_CAP`] bytes. Opened without following a link and without
/// waiting (a FIFO), then checked on the open file: nothing can swap it in between.
fn read_collected(path: &Path) -> Option<Result<Vec<u8>, String>> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read as _;
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return None,
        Err(rustix::io::Errno::LOOP) => return Some(Err("it is a symbolic link".into())),
        Err(e) => return Some(Err(format!("it could not be opened ({e})"))),
    };
    let check = || -> Result<Vec<u8>, String> {
        let stat = rustix::fs::fstat(&fd).map_err(|e| format!("it could not be read ({e})"))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err("it is not a regular file".into());
        }
        if stat.st_nlink != 1 {
            return Err("it is a hard link".into());
        }
        let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
        if size > COLLECTED_FILE_CAP {
            return Err(format!(
                "it is {size} bytes, more than the {COLLECTED_FILE_CAP} read back"
            ));
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd)
            .take(COLLECTED_FILE_CAP)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("it could not be read ({e})"))?;
        Ok(bytes)
    };
    Some(check())
}

/// Why a path an agent asked for was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("`{0}` is an absolute path: give a path relative to the working tree")]
    Absolute(PathBuf),
    #[error("`{0}` leads outside the working tree")]
    Escapes(PathBuf),
    #[error("`{path}` goes through a symbolic link that leads outside the working tree")]
    SymlinkEscapes { path: PathBuf },
    #[error("`{path}` goes through a symbolic link whose target does not exist")]
    DanglingSymlink { path: PathBuf },
    #[error("cannot check `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Resolves `requested` (relative, as an agent gives it) inside `root`, or refuses it.
///
/// Refused: absolute paths, `..` that climbs above the root, and symbolic links anywhere on
/// the way that lead outside the root (or nowhere: a dangling link cannot be checked, and
/// writing through it could create a file anywhere). The part of the path that exists is
/// resolved through the file system; the rest is appended as written, so a file the agent is
/// about to create is accepted. The returned path is absolute and starts with the canonical
/// root. A check like this races with anything that changes the tree between the check and
/// the use; agents that use it run their tools one at a time, in the same tree.
pub fn confine(root: &Path, requested: &Path) -> Result<PathBuf, ConfineError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConfineError::Io { path, source }
    };
    let root = root.canonicalize().map_err(io_err(root))?;

    // First, lexically: no root, no prefix, no climbing above the start.
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in requested.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err(ConfineError::Absolute(requested.to_path_buf()));
            }
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(ConfineError::Escapes(requested.to_path_buf()));
                }
            }
            Component::Normal(part) => parts.push(part),
        }
    }

    // Then through the file system, one component at a time, so that every symbolic link on
    // the way is seen and checked (canonicalizing the whole path would hide where it broke).
    let mut resolved = root.clone();
    for (i, part) in parts.iter().enumerate() {
        let candidate = resolved.join(part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => match candidate.canonicalize() {
                Ok(target) if target.starts_with(&root) => resolved = target,
                Ok(_) => {
                    return Err(ConfineError::SymlinkEscapes {
                        path: requested.to_path_buf(),
                    });
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(ConfineError::DanglingSymlink {
                        path: requested.to_path_buf(),
                    });
                }
                Err(err) => return Err(io_err(&candidate)(err)),
            },
            Ok(_) => resolved = candidate,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                // Nothing exists from here on: no link can hide in the rest.
                for rest in &parts[i..] {
                    resolved.push(rest);
                }
                return Ok(resolved);
            }
            Err(err) => return Err(io_err(&candidate)(err)),
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn sh(script: &str, cwd: &Path) -> SandboxCommand {
        SandboxCommand::new("sh", cwd)
            .arg("-c")
            .arg(script)
            .timeout(Duration::from_secs(20))
    }

    #[tokio::test]
    async fn runs_in_the_directory_with_stdin_and_interleaved_output() {
        let dir = tempfile::tempdir().unwrap();
        let run = sh(
            "pwd; echo out; echo err >&2; cat; echo end; exit 3",
            dir.path(),
        )
        .stdin("from stdin\n")
        .run()
        .await
        .unwrap();
        assert_eq!(run.exit, Exit::Code(3));
        let expected = format!(
            "{}\nout\nerr\nfrom stdin\nend\n",
            dir.path().canonicalize().unwrap().display()
        );
        assert_eq!(run.output.text(), expected);
    }

    #[tokio::test]
    async fn the_environment_holds_only_the_allow_list() {
        let dir = tempfile::tempdir().unwrap();
        let run = sh("env", dir.path())
            .env("RUNBOOKS_STEP", "1.2")
            .run()
            .await
            .unwrap();
        assert!(run.exit.success());
        let text = run.output.text();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .collect();
        names.sort_unstable();
        // `sh` itself adds PWD (and dash nothing else); cargo's own CARGO_* variables, which
        // this test process has, must not be there.
        let allowed = [
            "GIT_TERMINAL_PROMPT",
            "HOME",
            "LANG",
            "LC_ALL",
            "NO_COLOR",
            "OLDPWD",
            "PATH",
            "PWD",
            "RUNBOOKS_STEP",
            "SHLVL",
            "TERM",
            "TMPDIR",
        ];
        for name in &names {
            assert!(
                allowed.contains(name),
                "unexpected variable {name} in {text}"
            );
        }
        assert!(text.contains("RUNBOOKS_STEP=1.2\n"));
        assert!(text.contains("TERM=dumb\n"));
        assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
        assert!(!text.contains("CARGO_"));
        // HOME is private, fresh and gone afterwards.
        let home = text
            .lines()
            .find_map(|line| line.strip_prefix("HOME="))
            .unwrap();
        assert!(!Path::new(home).starts_with(dir.path()));
        assert!(!Path::new(home).exists());
    }

    #[tokio::test]
    async fn secret_looking_variables_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "GITHUB_TOKEN",
            "my_api_key",
            "WEBHOOK_SECRET",
            "RUNBOOKS_DATABASE_URL",
        ] {
            let err = sh("true", dir.path())
                .env(name, "x")
                .run()
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}");
            assert!(err.to_string().contains(name));
        }
        assert!(!looks_secret("RUNBOOKS_STEP_PROMPT"));
    }

    #[tokio::test]
    async fn the_output_cap_keeps_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        // 20,000 numbered lines: far more than the cap, and more than the pipe's buffer.
        let run = sh("seq 1 20000", dir.path())
            .output_cap(100)
            .run()
            .await
            .unwrap();
        assert!(run.exit.success());
        let text = run.output.text();
        assert!(text.ends_with("19999\n20000\n"), "{text}");
        let total: usize = (1..=20000).map(|n: u32| n.to_string().len() + 1).sum();
        assert_eq!(run.output.dropped(), (total - 100) as u64);
        assert!(text.starts_with(&format!("[… {} earlier bytes", total - 100)));
        let kept = text.split_once("…]\n").unwrap().1;
        assert_eq!(kept.len(), 100);
    }

    #[test]
    fn a_cut_inside_a_character_starts_at_the_next_one() {
        let mut tail = Tail::new(4);
        tail.push("aé€".as_bytes()); // 1 + 2 + 3 bytes: the cap cuts é in half
        let output = tail.finish();
        assert_eq!(output.dropped(), 2);
        assert_eq!(output.text(), "[… 3 earlier bytes of output not kept …]\n€");
    }

    #[tokio::test]
    async fn the_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let run = sh("sleep 30 & echo started; sleep 30", dir.path())
            .timeout(Duration::from_millis(300))
            .run()
            .await
            .unwrap();
        assert_eq!(run.exit, Exit::TimedOut);
        assert_eq!(run.output.text(), "started\n");
        let pgid = rustix::process::Pid::from_raw(run.pid as i32).unwrap();
        assert!(group_is_gone(pgid).await);
    }

    #[tokio::test]
    async fn what_a_command_leaves_running_is_killed_when_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let run = sh("sleep 30 > /dev/null 2>&1 & echo done", dir.path())
            .run()
            .await
            .unwrap();
        assert!(run.exit.success());
        let pgid = rustix::process::Pid::from_raw(run.pid as i32).unwrap();
        assert!(group_is_gone(pgid).await);
    }

    #[tokio::test]
    async fn a_dropped_run_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        // The shell's process group: the shell is not its leader (see `accounting`).
        let command = sh("cut -d' ' -f5 /proc/$$/stat > leader; sleep 30", dir.path());
        let run = command.run();
        // Drop the run once the command has started (the file exists), as a cancelled step does.
        let leader = dir.path().join("leader");
        tokio::select! {
            _ = run => panic!("the command should still be running"),
            () = poll_until(|| std::fs::read_to_string(&leader).is_ok_and(|s| s.ends_with('\n'))) => {}
        }
        let pid: i32 = std::fs::read_to_string(&leader)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pgid = rustix::process::Pid::from_raw(pid).unwrap();
        assert!(group_is_gone(pgid).await);
    }

    /// The CPU time of a run counts the processes the command waited for: a busy loop in a
    /// child shell uses more than a sleep, which uses next to none.
    #[tokio::test]
    async fn cpu_time_counts_what_the_command_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let busy = sh(
            "sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'",
            dir.path(),
        )
        .run()
        .await
        .unwrap();
        let sleeping = sh("sleep 0.3", dir.path()).run().await.unwrap();
        assert!(busy.exit.success() && sleeping.exit.success());
        assert!(busy.cpu > Duration::ZERO);
        assert!(
            busy.cpu > sleeping.cpu,
            "busy {:?}, sleeping {:?}",
            busy.cpu,
            sleeping.cpu
        );
        assert_eq!(busy.cpu_ms(), u64::try_from(busy.cpu.as_millis()).unwrap());
        // A run stopped at its deadline still reports what it used until then.
        let stopped = sh("while :; do :; done", dir.path())
            .timeout(Duration::from_millis(300))
            .run()
            .await
            .unwrap();
        assert_eq!(stopped.exit, Exit::TimedOut);
        assert!(stopped.cpu > Duration::ZERO);
    }

    #[tokio::test]
    async fn a_missing_working_tree_is_an_error_that_names_it() {
        let err = sh("true", Path::new("/nonexistent/runbooks-tree"))
            .run()
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/runbooks-tree"),
            "{err}"
        );
    }

    /// Polls `condition` until it holds (fails the test after 10 s).
    async fn poll_until(mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "condition not met in time");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether no live process is left in the group (zombies waiting for init to reap them
    /// are dead). Polls briefly: SIGKILL is delivered asynchronously.
    async fn group_is_gone(pgid: rustix::process::Pid) -> bool {
        poll_until(|| live_members(pgid.as_raw_pid()) == 0).await;
        true
    }

    /// Counts live processes in a process group by reading /proc.
    pub(crate) fn live_members(pgid: i32) -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|entry| {
                let stat = std::fs::read_to_string(entry.ok()?.path().join("stat")).ok()?;
                // Fields after the command name (which may contain spaces) in parentheses.
                let rest = &stat[stat.rfind(')')? + 2..];
                let fields: Vec<&str> = rest.split(' ').collect();
                let (state, group) = (fields.first()?, fields.get(2)?.parse::<i32>().ok()?);
                (group == pgid && *state != "Z" && *state != "X").then_some(())
            })
            .count()
    }

    #[test]
    fn confine_accepts_paths_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("src/inner")).unwrap();
        std::fs::write(root.join("src/lib.rs"), "").unwrap();
        symlink("src/inner", root.join("inner-link")).unwrap();
        symlink(root.join("src/lib.rs"), root.join("abs-link")).unwrap();
        let cases = [
            ("src/lib.rs", "src/lib.rs"),
            ("./src//lib.rs", "src/lib.rs"),
            ("src/inner/../lib.rs", "src/lib.rs"),
            ("src/new/dir/file.rs", "src/new/dir/file.rs"),
            ("new.txt", "new.txt"),
            ("inner-link/x.rs", "src/inner/x.rs"),
            ("abs-link", "src/lib.rs"),
            ("", ""),
            (".", ""),
            ("~/.ssh", "~/.ssh"),
        ];
        for (requested, expected) in cases {
            let got = confine(dir.path(), Path::new(requested)).unwrap();
            let expected = if expected.is_empty() {
                root.clone()
            } else {
                root.join(expected)
            };
            assert_eq!(got, expected, "{requested}");
        }
    }

    #[test]
    fn confine_refuses_escapes() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("src")).unwrap();
        symlink(outside.path(), root.join("out")).unwrap();
        symlink(outside.path().join("secret"), root.join("src/secret-link")).unwrap();
        symlink("../..", root.join("src/up")).unwrap();
        symlink("/etc/passwd", root.join("passwd")).unwrap();
        symlink("missing-target", root.join("dangling")).unwrap();

        let refuse = |p: &str| confine(root, Path::new(p)).unwrap_err();
        assert!(matches!(refuse("/etc/passwd"), ConfineError::Absolute(_)));
        assert!(matches!(refuse(".."), ConfineError::Escapes(_)));
        assert!(matches!(refuse("../x"), ConfineError::Escapes(_)));
        assert!(matches!(refuse("src/../../x"), ConfineError::Escapes(_)));
        assert!(matches!(refuse("a/b/../../../x"), ConfineError::Escapes(_)));
        for escaping in [
            "out",
            "out/secret",
            "out/new-file",
            "src/secret-link",
            "src/up",
            "src/up/etc",
            "passwd",
        ] {
            assert!(
                matches!(refuse(escaping), ConfineError::SymlinkEscapes { .. }),
                "{escaping}"
            );
        }
        assert!(matches!(
            refuse("dangling"),
            ConfineError::DanglingSymlink { .. }
        ));
        let message = refuse("out/secret").to_string();
        assert!(message.contains("out/secret") && message.contains("outside"));
    }

    #[test]
    fn confine_names_a_missing_root() {
        let err = confine(Path::new("/nonexistent/root"), Path::new("a")).unwrap_err();
        assert!(matches!(err, ConfineError::Io { .. }));
    }
}
