//! The jail every agent command runs in (SPEC §7): what a step may see, reach and use.
//!
//! Threat model: every agent step is hostile — shell from a prompt, an external coding CLI,
//! a model following a poisoned README. With [`JailConfig::bwrap`] set, a command runs under
//! bubblewrap with:
//!
//! - **Its own filesystem view**: the working tree (read-write), a private HOME
//!   (`/home/agent`) and `/tmp` (both fresh per command, on disk, removed afterwards), and
//!   read-only the system directories tools need (`/usr`, `/bin`, `/sbin`, `/lib*`, `/etc`,
//!   plus what the operator adds with `RUNBOOKS_AGENT_READ_PATHS`). Nothing else exists in
//!   it: not the data directory (mirrors, other runbooks' trees, the engine's git directory),
//!   not the database, not the app's key file, not the server user's home, not `/run` (no
//!   database or Docker socket), not `/var`, not `/sys`. Known secrets under `/etc`
//!   (`shadow`, SSH host keys, `ssl/private`, …) and any of the server's own files that fall
//!   under a visible directory ([`JailConfig::hidden`]) are masked.
//! - **Its own processes**: PID, IPC, UTS, cgroup and user namespaces and a new session; a
//!   `/proc` that shows only the jail's processes. When the command exits, the namespace's
//!   init exits and the kernel kills everything left in it — `setsid` and `nohup` children
//!   included — and `--die-with-parent` ends the jail if the server dies.
//! - **Its own network namespace**: only its own loopback, so never the server's ports, the
//!   database or metadata addresses. With a network policy other than `none`, an egress
//!   proxy of the server's ([`super::egress`]) is its only way out, reached through a Unix
//!   socket and a small forwarder inside the jail ([`super::forward`]).
//! - **No capabilities**, and resource limits ([`ResourceLimits`]: processes, file size,
//!   memory) set on the jail's first process and inherited by everything it starts.
//!
//! The environment is scrubbed by [`super::sandbox`]; variables the operator chose to pass
//! (`RUNBOOKS_AGENT_ENV`) are added, and the server's own secrets are refused by name
//! ([`check_pass_through`]).
//!
//! Without bubblewrap (`RUNBOOKS_SANDBOX=none`, an explicit opt-out) none of this holds but
//! the scrubbed environment, the process group, the limits and the deadline.

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::egress::NetworkPolicy;

/// Where a jailed command's HOME is, inside the jail.
pub const JAIL_HOME: &str = "/home/agent";
/// Where the forwarder binary and the egress socket are, inside the jail.
const JAIL_RUN: &str = "/run/runbooks";
/// The port the in-jail forwarder listens on (the jail's own loopback, nobody else's).
pub const PROXY_PORT: u16 = 3128;

/// System directories a command may read. Each is bound read-only when it exists (a symbolic
/// link such as Debian's `/bin -> usr/bin` is recreated as the same link).
const SYSTEM_DIRS: [&str; 8] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
];

/// Files and directories under `/etc` that hold secrets of the machine, masked in the jail
/// (a directory by an empty tmpfs, a file by `/dev/null`) when they exist.
const ETC_SECRETS: [&str; 14] = [
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ssl/private",
    "/etc/security/opasswd",
    "/etc/mysql/debian.cnf",
    "/etc/postgresql",
    "/etc/runbooks",
    "/etc/machine-id",
    "/etc/krb5.keytab",
];

/// Limits on what one agent command (with everything it starts) may use. `None`: the
/// machine's own limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// `RLIMIT_NPROC`. The kernel counts it per user: processes and threads of the server's
    /// user as a whole, so leave room for the server's own threads.
    pub processes: Option<u64>,
    /// `RLIMIT_FSIZE`: the largest file a command may write, in bytes.
    pub file_size: Option<u64>,
    /// `RLIMIT_DATA`: a process's data segment and private writable mappings, in bytes (the
    /// memory it actually uses, unlike `RLIMIT_AS`, which counts address space that runtimes
    /// such as V8 and Go reserve without using).
    pub memory: Option<u64>,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        Self {
            processes: Some(4096),
            file_size: Some(4 << 30),
            memory: Some(8 << 30),
        }
    }
}

impl ResourceLimits {
    /// No limits at all.
    pub const NONE: ResourceLimits = ResourceLimits {
        processes: None,
        file_size: None,
        memory: None,
    };

    /// Sets the limits on the calling process. Called between `fork` and `exec`: it only
    /// makes raw `setrlimit` system calls (async-signal-safe, no allocation).
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        use rustix::process::{Resource, Rlimit, setrlimit};
        for (resource, value) in [
            (Resource::Nproc, self.processes),
            (Resource::Fsize, self.file_size),
            (Resource::Data, self.memory),
        ] {
            if let Some(value) = value {
                let limit = Rlimit {
                    current: Some(value),
                    maximum: Some(value),
                };
                setrlimit(resource, limit)?;
            }
        }
        Ok(())
    }
}

/// A variable of the server's environment passed to agent commands
/// (`RUNBOOKS_AGENT_ENV`). Its value is never shown.
#[derive(Clone)]
pub struct PassedVar {
    pub name: String,
    pub value: OsString,
}

impl fmt::Debug for PassedVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=<hidden>", self.name)
    }
}

/// Why `RUNBOOKS_AGENT_ENV` names a variable that may not be passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RUNBOOKS_AGENT_ENV names {name}, which may not be passed to agent commands: {reason}")]
pub struct PassThroughError {
    pub name: String,
    pub reason: &'static str,
}

/// Checks a variable name the operator wants passed to agent commands. The server's own
/// settings and GitHub's credentials are refused by name, whatever their value: they are
/// what a hostile step is after. (Anything else is the operator's explicit choice, e.g. a
/// coding CLI's model key.)
pub fn check_pass_through(name: &str) -> Result<(), PassThroughError> {
    let refuse = |reason| {
        Err(PassThroughError {
            name: name.to_string(),
            reason,
        })
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return refuse("not a variable name");
    }
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("RUNBOOKS_") {
        return refuse("the server's own settings (RUNBOOKS_*) stay with the server");
    }
    if upper.starts_with("GITHUB_") || upper.starts_with("GH_") || upper.starts_with("GIT_") {
        return refuse(
            "GitHub's and git's credentials and settings stay with the server (the engine \
             does every push itself)",
        );
    }
    if matches!(
        upper.as_str(),
        "DATABASE_URL" | "PGPASSWORD" | "PGPASSFILE" | "PGSERVICEFILE" | "PATH" | "HOME"
    ) || upper.starts_with("LD_")
    {
        return refuse("the database's credentials and the process's own setup are not passed");
    }
    Ok(())
}

/// How agent commands are jailed. Built once at start from the configuration.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The bubblewrap program; `None` runs commands unjailed (an explicit opt-out).
    pub bwrap: Option<PathBuf>,
    /// Where commands may connect to.
    pub network: NetworkPolicy,
    /// Addresses the egress proxy never connects to, whatever the policy: the server's own
    /// listeners.
    pub deny: Vec<SocketAddr>,
    /// The server's own files and directories (data directory, database, key file): masked
    /// when they lie under a directory the jail shows.
    pub hidden: Vec<PathBuf>,
    /// More directories shown read-only (`RUNBOOKS_AGENT_READ_PATHS`).
    pub read_only: Vec<PathBuf>,
    pub limits: ResourceLimits,
    /// Variables of the server's environment passed on (`RUNBOOKS_AGENT_ENV`), checked.
    pub pass_env: Vec<PassedVar>,
    /// The `runbooks` binary, run inside the jail as the egress forwarder; needed when the
    /// network policy uses the proxy.
    pub helper: Option<PathBuf>,
}

impl Default for JailConfig {
    /// No jail: a scrubbed environment and a process group only, no limits.
    fn default() -> Self {
        Self {
            bwrap: None,
            network: NetworkPolicy::Open,
            deny: Vec::new(),
            hidden: Vec::new(),
            read_only: Vec::new(),
            limits: ResourceLimits::NONE,
            pass_env: Vec::new(),
            helper: None,
        }
    }
}

/// A shared, cheap-to-clone [`JailConfig`].
#[derive(Debug, Clone, Default)]
pub struct Jail(Arc<JailConfig>);

impl From<JailConfig> for Jail {
    fn from(config: JailConfig) -> Self {
        Jail(Arc::new(config))
    }
}

impl std::ops::Deref for Jail {
    type Target = JailConfig;

    fn deref(&self) -> &JailConfig {
        &self.0
    }
}

/// The private directories of one command run (outside the tree, removed afterwards).
pub(crate) struct RunDirs<'a> {
    pub tree: &'a Path,
    /// The tree is bound read-only (a planner reads the repository, it does not change it).
    pub tree_read_only: bool,
    /// Becomes the command's HOME.
    pub home: &'a Path,
    /// Becomes the command's `/tmp` (TMPDIR).
    pub tmp: &'a Path,
    /// The egress proxy's Unix socket, when the policy uses it.
    pub proxy_socket: Option<&'a Path>,
}

impl JailConfig {
    pub fn is_jailed(&self) -> bool {
        self.bwrap.is_some()
    }

    /// Whether commands reach the network through the egress proxy (jailed, and a policy
    /// other than `none`).
    pub fn uses_proxy(&self) -> bool {
        self.is_jailed() && self.network.needs_proxy()
    }

    /// HOME and TMPDIR as the command sees them.
    pub(crate) fn home_and_tmp(&self, dirs: &RunDirs<'_>) -> (PathBuf, PathBuf) {
        if self.is_jailed() {
            (PathBuf::from(JAIL_HOME), PathBuf::from("/tmp"))
        } else {
            (dirs.home.to_path_buf(), dirs.tmp.to_path_buf())
        }
    }

    /// The proxy variables for a command behind the egress proxy.
    pub(crate) fn proxy_env(&self) -> Vec<(String, OsString)> {
        if !self.uses_proxy() {
            return Vec::new();
        }
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        let mut env = Vec::new();
        for name in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ] {
            env.push((name.to_string(), OsString::from(&proxy)));
        }
        for name in ["NO_PROXY", "no_proxy"] {
            env.push((name.to_string(), OsString::from("localhost,127.0.0.1,::1")));
        }
        env
    }

    /// The program and arguments that run `program args` in this jail (or as they are,
    /// without one).
    pub(crate) fn invocation(
        &self,
        program: &OsString,
        args: &[OsString],
        dirs: &RunDirs<'_>,
    ) -> (OsString, Vec<OsString>) {
        let Some(bwrap) = &self.bwrap else {
            return (program.clone(), args.to_vec());
        };
        let mut jail = Args::default();
        jail.flags(&[
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "runbooks-agent",
        ]);
        // Later mounts go on top of earlier ones: the system directories, the jail's own
        // /proc, /dev, /tmp and HOME, then the operator's read-only paths (which may lie
        // under /tmp), then the masks over anything secret in what is shown, and the tree
        // last (it may lie under a masked directory).
        let mut shown: Vec<PathBuf> = Vec::new();
        let mut show = |jail: &mut Args, dir: PathBuf| match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&dir) {
                    jail.pair("--symlink", target, &dir);
                }
            }
            Ok(_) => {
                jail.pair("--ro-bind", &dir, &dir);
                shown.push(dir);
            }
            Err(_) => {}
        };
        for dir in SYSTEM_DIRS.iter().map(PathBuf::from) {
            show(&mut jail, dir);
        }
        jail.one("--proc", "/proc");
        jail.one("--dev", "/dev");
        jail.pair("--bind", dirs.tmp, "/tmp");
        jail.pair("--symlink", "/tmp", "/var/tmp");
        jail.pair("--bind", dirs.home, JAIL_HOME);
        for dir in &self.read_only {
            show(&mut jail, dir.clone());
        }
        let masked = ETC_SECRETS
            .iter()
            .map(PathBuf::from)
            .chain(self.hidden.iter().cloned());
        for path in masked {
            if !shown.iter().any(|dir| path.starts_with(dir)) {
                continue;
            }
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => jail.one("--tmpfs", &path),
                Ok(_) => jail.pair("--ro-bind", "/dev/null", &path),
                Err(_) => {}
            }
        }
        let tree_bind = if dirs.tree_read_only {
            "--ro-bind"
        } else {
            "--bind"
        };
        jail.pair(tree_bind, dirs.tree, dirs.tree);
        let forwarder = match (&self.helper, dirs.proxy_socket) {
            (Some(helper), Some(socket)) if self.uses_proxy() => {
                let inside_helper = PathBuf::from(JAIL_RUN).join("runbooks");
                let inside_socket = PathBuf::from(JAIL_RUN).join("egress.sock");
                jail.pair("--ro-bind", helper, &inside_helper);
                jail.pair("--ro-bind", socket, &inside_socket);
                Some((inside_helper, inside_socket))
            }
            _ => None,
        };
        jail.one("--chdir", dirs.tree);
        jail.flags(&["--"]);
        if let Some((helper, socket)) = forwarder {
            jail.0.push(helper.into());
            jail.0.push(super::forward::SUBCOMMAND.into());
            jail.0.push(socket.into());
            jail.0.push(PROXY_PORT.to_string().into());
            jail.0.push("--".into());
        }
        jail.0.push(program.clone());
        jail.0.extend(args.iter().cloned());
        (bwrap.clone().into_os_string(), jail.0)
    }
}

/// bubblewrap's argument list, built in order (later mounts go on top of earlier ones).
#[derive(Default)]
struct Args(Vec<OsString>);

impl Args {
    fn flags(&mut self, flags: &[&str]) {
        self.0.extend(flags.iter().map(OsString::from));
    }

    fn one(&mut self, flag: &str, value: impl AsRef<std::ffi::OsStr>) {
        self.0.push(flag.into());
        self.0.push(value.as_ref().to_os_string());
    }

    fn pair(
        &mut self,
        flag: &str,
        from: impl AsRef<std::ffi::OsStr>,
        to: impl AsRef<std::ffi::OsStr>,
    ) {
        self.0.push(flag.into());
        self.0.push(from.as_ref().to_os_string());
        self.0.push(to.as_ref().to_os_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_secrets_are_refused_by_name() {
        for name in [
            "GITHUB_PRIVATE_KEY",
            "GITHUB_WEBHOOK_SECRET",
            "github_token",
            "GH_TOKEN",
            "GIT_ASKPASS",
            "RUNBOOKS_DATABASE_URL",
            "RUNBOOKS_TOKEN",
            "DATABASE_URL",
            "PGPASSWORD",
            "LD_PRELOAD",
            "PATH",
            "",
            "A-B",
            "1X",
        ] {
            assert!(check_pass_through(name).is_err(), "{name} accepted");
        }
        for name in ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "NPM_CONFIG_REGISTRY"] {
            assert!(check_pass_through(name).is_ok(), "{name} refused");
        }
        let err = check_pass_through("GITHUB_WEBHOOK_SECRET").unwrap_err();
        assert!(
            err.to_string()
                .contains("RUNBOOKS_AGENT_ENV names GITHUB_WEBHOOK_SECRET")
        );
    }

    #[test]
    fn passed_values_are_never_shown() {
        let var = PassedVar {
            name: "ANTHROPIC_API_KEY".into(),
            value: "sk-secret".into(),
        };
        assert_eq!(format!("{var:?}"), "ANTHROPIC_API_KEY=<hidden>");
    }

    fn dirs<'a>(tree: &'a Path, home: &'a Path, tmp: &'a Path) -> RunDirs<'a> {
        RunDirs {
            tree,
            tree_read_only: false,
            home,
            tmp,
            proxy_socket: None,
        }
    }

    #[test]
    fn without_bwrap_the_command_runs_as_it_is() {
        let jail = JailConfig::default();
        let (program, args) = jail.invocation(
            &"sh".into(),
            &["-c".into(), "true".into()],
            &dirs(Path::new("/t"), Path::new("/h"), Path::new("/x")),
        );
        assert_eq!(program, "sh");
        assert_eq!(args, ["-c", "true"]);
    }

    #[test]
    fn the_jail_shows_the_tree_home_tmp_and_system_directories_only() {
        let data = tempfile::tempdir().unwrap();
        let jail = JailConfig {
            bwrap: Some("bwrap".into()),
            network: NetworkPolicy::None,
            // Under /etc, which is shown: masked.
            hidden: vec!["/etc/hostname".into(), data.path().into()],
            ..JailConfig::default()
        };
        let (program, args) = jail.invocation(
            &"sh".into(),
            &["-c".into(), "true".into()],
            &dirs(
                Path::new("/d/tree"),
                Path::new("/r/home"),
                Path::new("/r/tmp"),
            ),
        );
        assert_eq!(program, "bwrap");
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = text.join(" ");
        assert!(joined.starts_with("--unshare-all --die-with-parent --new-session"));
        assert!(!joined.contains("--share-net"));
        assert!(joined.contains("--ro-bind /usr /usr"));
        assert!(joined.contains("--ro-bind /etc /etc"));
        assert!(joined.contains("--ro-bind /dev/null /etc/hostname"));
        // A hidden path not under a shown directory needs no mask: it is not there at all.
        assert!(!joined.contains(&data.path().display().to_string()));
        assert!(joined.contains("--bind /r/tmp /tmp"));
        assert!(joined.contains("--bind /r/home /home/agent"));
        assert!(joined.ends_with("--bind /d/tree /d/tree --chdir /d/tree -- sh -c true"));
        assert!(
            !text.iter().any(|a| a == "/"),
            "the root is never bound: {joined}"
        );
    }
}
