//! The git layer: a cache of bare mirrors, one working tree per runbook, commits per step and
//! pushes, all with libgit2 (`git2`).
//!
//! Layout under the data directory:
//!
//! - `repos/<owner>/<name>.git`: a bare mirror of every branch of the repository, created by
//!   the first use and afterwards only updated by fetch;
//! - `worktrees/runbook-<n>/`: the slot of runbook `n`: `tree/`, the working tree the agent
//!   works in, and beside it (not inside it) `git/`, the engine's git directory, whose object
//!   database borrows the mirror's through `objects/info/alternates`, so setting it up copies
//!   no objects (only the checkout writes files), and everything the mirror fetched later is
//!   visible in it at once. It has no configured remote. See `worktree.rs` for why the git
//!   directory is kept out of the tree;
//! - `worktrees/idle/<owner>/<name>/…`: slots of finished runbooks ([`RepoCache::release`]),
//!   handed to the next runbook of the repository, which then only rewrites the files that
//!   differ instead of writing every file of the repository.
//!
//! Directories are created readable by the server's user only (0700).
//!
//! **What the engine's git obeys: only the engine.** The engine's repositories are opened by
//! explicit path, never discovered from a working directory; libgit2's system, global and XDG
//! configuration files are switched off for the whole process ([`RepoCache::new`]), so
//! neither `~/.gitconfig` nor `/etc/gitconfig` can rewrite a URL, set a proxy or move a work
//! tree; redirects are not followed; and the credentials callback answers only for the exact
//! clone URL it was given.
//!
//! The installation token reaches libgit2 only through the credentials callback of anonymous
//! remotes: it is never written to a configuration file, a URL, a log line or any other file.
//!
//! libgit2 is blocking; every operation runs on `tokio::task::spawn_blocking`. Fetches into
//! one mirror are serialised within the process (libgit2 takes ref locks and would fail a
//! concurrent fetch instead of waiting). A working tree is used by one step at a time: the
//! engine guarantees it, this module does not lock it.

mod error;
mod transport;
mod worktree;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use git2::Repository;
use secrecy::SecretString;

pub use error::GitError;
use error::{IoContext as _, LocalContext as _};
use transport::Endpoint;
pub use worktree::SetupLeftovers;

/// The repository on the git server, and the installation token to reach it.
#[derive(Clone, Copy)]
pub struct Remote<'a> {
    /// `owner/name` as GitHub names it (used for the mirror's path and in messages).
    pub full_name: &'a str,
    /// The `clone_url` of GitHub's repository object. It must not carry credentials.
    pub clone_url: &'a str,
    /// An installation token with contents permission on the repository.
    pub token: &'a SecretString,
}

impl std::fmt::Debug for Remote<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("full_name", &self.full_name)
            .field("clone_url", &self.clone_url)
            .finish_non_exhaustive()
    }
}

impl Remote<'_> {
    fn endpoint(&self) -> Result<Endpoint, GitError> {
        check_url(self.clone_url)?;
        Ok(Endpoint {
            full_name: self.full_name.to_string(),
            url: self.clone_url.to_string(),
            token: self.token.clone(),
        })
    }
}

/// Who commits: the engine passes the app's bot, `<slug>[bot]` and
/// `<id>+<slug>[bot]@users.noreply.github.com`, used as both author and committer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub email: String,
}

/// The mirrors and working trees under one data directory. Cheap to clone; clones share the
/// per-mirror fetch locks, so one `RepoCache` (or clones of it) should serve the process.
#[derive(Debug, Clone)]
pub struct RepoCache {
    root: PathBuf,
    locks: Arc<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>>,
}

impl RepoCache {
    /// A cache under `data_dir`. Nothing is created until first use. A relative `data_dir` is
    /// made absolute now, because working trees refer to their mirror by absolute path.
    pub fn new(data_dir: &Path) -> Self {
        configure_libgit2();
        let root = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        RepoCache {
            root,
            locks: Arc::default(),
        }
    }

    /// Where the mirror of `owner/name` lives: `repos/<owner>/<name>.git`, lower case (GitHub
    /// names are case-insensitive).
    pub fn mirror_path(&self, full_name: &str) -> Result<PathBuf, GitError> {
        let (owner, name) = split_full_name(full_name)?;
        Ok(self
            .root
            .join("repos")
            .join(owner.to_lowercase())
            .join(format!("{}.git", name.to_lowercase())))
    }

    /// Where the slot of runbook `runbook` lives: `worktrees/runbook-<n>` (its working tree
    /// and, beside it, the engine's git directory).
    pub fn slot_path(&self, runbook: i64) -> PathBuf {
        self.root
            .join("worktrees")
            .join(format!("runbook-{runbook}"))
    }

    /// Where the working tree of runbook `runbook` lives: `worktrees/runbook-<n>/tree`.
    pub fn worktree_path(&self, runbook: i64) -> PathBuf {
        worktree::tree_dir(&self.slot_path(runbook))
    }

    /// The data directory everything lives under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where released working trees of `owner/name` wait for a later runbook:
    /// `worktrees/idle/<owner>/<name>`.
    fn pool_path(&self, full_name: &str) -> Result<PathBuf, GitError> {
        let (owner, name) = split_full_name(full_name)?;
        Ok(self
            .root
            .join("worktrees")
            .join("idle")
            .join(owner.to_lowercase())
            .join(name.to_lowercase()))
    }

    fn lock_for(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        // A poisoned map only means another thread panicked while inserting; the map is
        // still usable.
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(path.to_path_buf()).or_default().clone()
    }

    /// Brings the mirror of the repository up to date with every branch of the remote
    /// (creating it on first use) and returns its path.
    pub async fn update_mirror(&self, remote: &Remote<'_>) -> Result<PathBuf, GitError> {
        let path = self.mirror_path(remote.full_name)?;
        let endpoint = remote.endpoint()?;
        // The guard moves into the blocking task: if this future is dropped, the fetch still
        // runs to its end, and the next fetch of the mirror waits for it.
        let guard = self.lock_for(&path).lock_owned().await;
        let mirror = path.clone();
        blocking(move || {
            let _guard = guard;
            update_mirror_blocking(&mirror, &endpoint)
        })
        .await?;
        Ok(path)
    }

    /// Prepares the working tree of `runbook` on `branch`, after updating the mirror: when
    /// the branch exists on the remote it is checked out at the remote's head (resuming after
    /// a crash, or a follow-up); otherwise it is created from `base` (the target branch, or
    /// the previous branch of a stack). Anything left in the tree (uncommitted changes,
    /// untracked files, unpushed commits) is discarded; ignored files are kept, as
    /// `git clean -fd` would, so build caches survive.
    ///
    /// A runbook without a tree gets one released by an earlier runbook of the repository
    /// when there is one (see [`RepoCache::release`]): checking it out rewrites only the files
    /// that differ, where a new tree writes every file of the repository.
    pub async fn worktree(
        &self,
        remote: &Remote<'_>,
        runbook: i64,
        branch: &str,
        base: &str,
    ) -> Result<Worktree, GitError> {
        check_branch(branch)?;
        check_branch(base)?;
        let pool = self.pool_path(remote.full_name)?;
        let mirror = self.update_mirror(remote).await?;
        let slot = self.slot_path(runbook);
        let (full_name, branch_name, base) = (
            remote.full_name.to_string(),
            branch.to_string(),
            base.to_string(),
        );
        let prepared = slot.clone();
        blocking(move || {
            worktree::prepare(&mirror, &prepared, &pool, &full_name, &branch_name, &base)
        })
        .await?;
        Ok(Worktree {
            path: worktree::tree_dir(&slot),
            slot,
            branch: branch.to_string(),
        })
    }

    /// Hands back the working tree of a runbook that is finished (completed, failed for
    /// good, or cancelled): it is cleaned (local changes, untracked and ignored files) and
    /// kept for a later runbook of `full_name`, up to two per repository, or deleted. Without
    /// this, every runbook's tree stays on disk. Does nothing when the runbook has no tree.
    pub async fn release(&self, full_name: &str, runbook: i64) -> Result<(), GitError> {
        let mirror = self.mirror_path(full_name)?;
        let pool = self.pool_path(full_name)?;
        let slot = self.slot_path(runbook);
        blocking(move || worktree::release(&mirror, &slot, &pool)).await
    }
}

/// The working tree of one runbook, checked out on its work branch.
#[derive(Debug, Clone)]
pub struct Worktree {
    /// `worktrees/runbook-<n>`: the tree and the engine's git directory.
    slot: PathBuf,
    /// `<slot>/tree`: what the agent sees.
    path: PathBuf,
    branch: String,
}

/// A commit as the engine checks it before adopting it as its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub message: String,
    pub author: Identity,
    pub committer: Identity,
}

impl Worktree {
    /// The directory the agent works in. It holds no git directory of the engine's.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine's git directory for this tree (outside it). For tests and diagnostics:
    /// open it with `Repository::open_bare` and `set_workdir(self.path())`.
    pub fn git_dir(&self) -> PathBuf {
        worktree::git_dir(&self.slot)
    }

    /// The work branch (without `refs/heads/`).
    pub fn branch(&self) -> &str {
        &self.branch
    }

    /// Whether the repository's setup already ran in this tree (for this runbook: a tree
    /// released or recycled for another runbook forgets it). The mark lives in the slot,
    /// outside the tree, where no agent can forge it.
    pub fn is_set_up(&self) -> bool {
        worktree::is_set_up(&self.slot)
    }

    /// Marks the tree set up (see [`Self::is_set_up`]).
    pub async fn mark_set_up(&self) -> Result<(), GitError> {
        let slot = self.slot.clone();
        blocking(move || worktree::mark_set_up(&slot)).await
    }

    /// Keeps what the repository's setup did to the tree out of every commit: tracked files
    /// it changed are checked out again, untracked paths it made are excluded in the engine's
    /// own git directory (the steps still see them). Returns what it did, for the setup's
    /// log.
    pub async fn keep_setup_out_of_commits(&self) -> Result<SetupLeftovers, GitError> {
        let slot = self.slot.clone();
        blocking(move || worktree::keep_setup_out(&slot)).await
    }

    /// Stages everything (additions, modifications and deletions, honouring `.gitignore`)
    /// and, when the tree differs from the branch head, commits it on the work branch as
    /// `who` (author and committer) with `message`. Returns the new commit's sha, or `None`
    /// when nothing changed: there are no empty commits. Fails with
    /// [`GitError::NotOnBranch`] when something (an agent running git) switched the tree to
    /// another branch.
    pub async fn commit_all(
        &self,
        message: &str,
        who: &Identity,
    ) -> Result<Option<String>, GitError> {
        let (slot, branch) = (self.slot.clone(), self.branch.clone());
        let (message, who) = (message.to_string(), who.clone());
        blocking(move || worktree::commit_all(&slot, &branch, &message, &who)).await
    }

    /// Pushes the work branch to the remote without force (a branch that moved on the remote
    /// is [`GitError::Rejected`]). Returns the pushed sha.
    pub async fn push(&self, remote: &Remote<'_>) -> Result<String, GitError> {
        self.push_inner(remote, false).await
    }

    /// Pushes the work branch, overwriting whatever the remote branch holds. Returns the
    /// pushed sha.
    pub async fn force_push(&self, remote: &Remote<'_>) -> Result<String, GitError> {
        self.push_inner(remote, true).await
    }

    async fn push_inner(&self, remote: &Remote<'_>, force: bool) -> Result<String, GitError> {
        let endpoint = remote.endpoint()?;
        let (slot, branch) = (self.slot.clone(), self.branch.clone());
        blocking(move || {
            let repo = worktree::open_slot(&slot)?;
            let refname = format!("refs/heads/{branch}");
            let head = repo
                .refname_to_id(&refname)
                .local(|| format!("reading {refname} in {}", slot.display()))?;
            let started = std::time::Instant::now();
            transport::push_branch(&repo, &endpoint, &branch, force)?;
            tracing::debug!(
                repo = %endpoint.full_name,
                %branch,
                sha = %head,
                force,
                elapsed = ?started.elapsed(),
                "pushed"
            );
            Ok(head.to_string())
        })
        .await
    }

    /// The sha `HEAD` points at.
    pub async fn head(&self) -> Result<String, GitError> {
        Ok(self.head_commit().await?.sha)
    }

    /// The commit `HEAD` points at: sha, message, author and committer.
    pub async fn head_commit(&self) -> Result<CommitInfo, GitError> {
        let slot = self.slot.clone();
        blocking(move || {
            let repo = worktree::open_slot(&slot)?;
            let head = repo
                .head()
                .and_then(|h| h.peel_to_commit())
                .local(|| format!("reading HEAD in {}", slot.display()))?;
            let who = |s: git2::Signature<'_>| Identity {
                name: String::from_utf8_lossy(s.name_bytes()).into_owned(),
                email: String::from_utf8_lossy(s.email_bytes()).into_owned(),
            };
            Ok(CommitInfo {
                sha: head.id().to_string(),
                message: String::from_utf8_lossy(head.message_bytes()).into_owned(),
                author: who(head.author()),
                committer: who(head.committer()),
            })
        })
        .await
    }
}

/// How long libgit2 waits for a TCP connection to the git server.
const CONNECT_TIMEOUT_MS: i32 = 30_000;
/// How long libgit2 waits on a silent connection (a read or write that makes no progress).
/// libgit2's default is to wait forever, which would pin a blocking thread and a runbook on
/// a server that stopped answering.
const SERVER_TIMEOUT_MS: i32 = 300_000;

/// Sets libgit2's process-wide options, once: network timeouts, and no configuration files
/// but each repository's own (no system, global or XDG `gitconfig`: `url.*.insteadOf`,
/// `http.proxy` or `core.worktree` from there would steer the engine's git).
fn configure_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: these write plain C globals that libgit2 reads only when it opens a
        // repository or uses a network stream. Every git operation of this process goes
        // through a `RepoCache`, and none exists before this `call_once` has finished (which
        // orders the writes before any such read), so nothing reads them concurrently.
        let result = unsafe {
            git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS)
                .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(SERVER_TIMEOUT_MS))
                .and_then(|()| {
                    [
                        git2::ConfigLevel::System,
                        git2::ConfigLevel::XDG,
                        git2::ConfigLevel::Global,
                        git2::ConfigLevel::ProgramData,
                    ]
                    .into_iter()
                    .try_for_each(|level| git2::opts::set_search_path(level, ""))
                })
        };
        if let Err(error) = result {
            // Fail loudly: running with the user's git configuration would let a file the
            // engine does not own decide where its pushes go.
            panic!("could not configure libgit2: {error}");
        }
    });
}

/// Creates `dir` (and missing parents) readable by the server's user only. An existing
/// directory keeps its mode.
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Runs blocking libgit2 work off the async runtime, with asynchronous signals blocked on
/// its thread (see [`SignalsBlocked`]).
async fn blocking<T, F>(f: F) -> Result<T, GitError>
where
    F: FnOnce() -> Result<T, GitError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _blocked = SignalsBlocked::new();
        f()
    })
    .await
    .map_err(|e| GitError::Task(e.to_string()))?
}

/// Asynchronous signals blocked on the current thread while it lives; the previous mask is
/// restored on drop (blocking-pool threads are reused).
///
/// libgit2 waits on its sockets with timeouts, and a wait with a timeout is not restarted
/// after a signal handler runs: it fails with EINTR ("error receiving data from socket:
/// Interrupted system call"), and so does the push or fetch. The server has handlers
/// installed (tokio's SIGCHLD, for agent processes; SIGTERM), and a signal sent to the
/// process goes to any thread that does not block it, so an agent step ending in one runbook
/// could fail another runbook's push. Blocked here, those signals go to the runtime's
/// threads. Synchronous faults (SIGSEGV and the like) are left alone.
struct SignalsBlocked {
    previous: libc::sigset_t,
}

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: sigset_t is plain data initialised by sigfillset/sigdelset before use;
        // pthread_sigmask only changes this thread's mask.
        unsafe {
            let mut block: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut block);
            for synchronous in [
                libc::SIGSEGV,
                libc::SIGBUS,
                libc::SIGFPE,
                libc::SIGILL,
                libc::SIGTRAP,
            ] {
                libc::sigdelset(&mut block, synchronous);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut previous);
            Self { previous }
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask `new` saved, on the thread that blocked the signals:
        // the guard is a local of the closure `blocking` runs, dropped where it was made.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.previous, std::ptr::null_mut());
        }
    }
}

/// Removes the lock files git leaves when a process dies in the middle of an update — at
/// the top of `git_dir` (`index.lock`, `HEAD.lock`, `packed-refs.lock`, …) and under
/// `refs/`. The caller must be the only one updating `git_dir`. Objects are not looked at:
/// git writes them to temporary files, never behind locks.
pub(crate) fn remove_lock_files(git_dir: &Path) -> Result<(), GitError> {
    fn walk(dir: &Path, deep: bool) -> Result<(), GitError> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if deep || entry.file_name() == "refs" {
                    walk(&path, true)?;
                }
            } else if path.extension().is_some_and(|e| e == "lock") {
                tracing::info!(path = %path.display(), "removing a lock file left by a crash");
                std::fs::remove_file(&path).io("removing a stale lock file", &path)?;
            }
        }
        Ok(())
    }
    walk(git_dir, false)
}

/// Takes this mirror's turn among the processes that share the data directory (replicas, a
/// restarted server beside a dying one): an advisory lock on a file beside the mirror, held
/// until the returned file is dropped, and released by the kernel when its holder dies —
/// even by SIGKILL. Whoever holds it knows no git update of the mirror is under way, so any
/// lock file in the mirror was left by a crash. (Within the process, [`RepoCache`]'s
/// per-mirror mutex already lets one fetch at a time through.)
///
/// The lock files live in `repos/.turns/<owner>/` (no GitHub owner starts with a dot), so
/// an owner's directory holds its mirrors and nothing else.
fn take_mirror_turn(path: &Path) -> Result<std::fs::File, GitError> {
    let parent = path.parent().unwrap_or(path);
    create_private_dir(parent).io("creating the mirror's directory", parent)?;
    let (owner, repos) = (
        parent.file_name().unwrap_or_default(),
        parent.parent().unwrap_or(parent),
    );
    let turns = repos.join(".turns").join(owner);
    create_private_dir(&turns).io("creating the mirrors' turn locks", &turns)?;
    let turn_path = turns.join(path.file_name().unwrap_or_default());
    let turn = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&turn_path)
        .io("opening the mirror's turn lock", &turn_path)?;
    turn.lock()
        .io("waiting for the mirror's turn", &turn_path)?;
    Ok(turn)
}

/// Length of the random part of a new mirror's scratch directory name.
const SCRATCH_RAND_LEN: usize = 8;

/// Opens the mirror, or creates it when missing. A new mirror is initialised and filled in
/// a temporary directory next to its final place, then renamed: a crash during the first
/// fetch leaves no half-filled mirror behind for later fetches to trust.
fn update_mirror_blocking(path: &Path, endpoint: &Endpoint) -> Result<(), GitError> {
    let started = std::time::Instant::now();
    let _turn = take_mirror_turn(path)?;
    if path.exists() {
        match Repository::open_bare(path) {
            Ok(mirror) => {
                // A process killed in the middle of a fetch leaves its ref locks behind, and
                // every later fetch would fail on them: with the mirror's turn taken, every
                // lock file in it is such a leftover.
                remove_lock_files(path)?;
                transport::fetch_mirror(&mirror, endpoint)?;
                let elapsed = started.elapsed();
                tracing::debug!(repo = %endpoint.full_name, ?elapsed, "mirror fetched");
                return Ok(());
            }
            Err(error) => {
                let repo = &endpoint.full_name;
                tracing::warn!(%repo, %error, "the mirror is unreadable; creating it again");
                std::fs::remove_dir_all(path).io("removing an unreadable mirror", path)?;
            }
        }
    }
    let parent = path.parent().unwrap_or(path);
    // Scratch directories of this mirror left by a crash during a first fetch (this process
    // holds the mirror's turn, so none of them is in use).
    let prefix = format!(
        ".new-{}-",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    if let Ok(entries) = std::fs::read_dir(parent) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.strip_prefix(&prefix).is_some_and(|rest| {
                rest.len() == SCRATCH_RAND_LEN && rest.chars().all(|c| c.is_ascii_alphanumeric())
            });
            if ours {
                std::fs::remove_dir_all(entry.path())
                    .io("removing an unfinished mirror", &entry.path())?;
            }
        }
    }
    let scratch = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(SCRATCH_RAND_LEN)
        .tempdir_in(parent)
        .io("creating a temporary directory for the mirror", parent)?;
    {
        let mirror = Repository::init_bare(scratch.path())
            .local(|| format!("creating a mirror in {}", scratch.path().display()))?;
        transport::fetch_mirror(&mirror, endpoint)?;
    }
    let scratch = scratch.keep();
    std::fs::rename(&scratch, path).io("moving the new mirror into place", path)?;
    let elapsed = started.elapsed();
    tracing::debug!(repo = %endpoint.full_name, ?elapsed, "mirror created");
    Ok(())
}

/// `owner/name`, each part a GitHub name (letters, digits, `-`, `_`, `.`), never `.` or `..`
/// (they would escape the cache directory).
fn split_full_name(full_name: &str) -> Result<(&str, &str), GitError> {
    let invalid = |reason| GitError::Invalid {
        what: "repository name",
        value: full_name.to_string(),
        reason,
    };
    let (owner, name) = full_name
        .split_once('/')
        .ok_or_else(|| invalid("expected owner/name"))?;
    for part in [owner, name] {
        if part.is_empty() || part == "." || part == ".." {
            return Err(invalid("expected owner/name"));
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(
                "only letters, digits, `-`, `_` and `.` are allowed",
            ));
        }
    }
    Ok((owner, name))
}

fn check_branch(branch: &str) -> Result<(), GitError> {
    if git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        Ok(())
    } else {
        Err(GitError::Invalid {
            what: "branch name",
            value: branch.to_string(),
            reason: "not a valid git branch name",
        })
    }
}

/// Clone URLs come from GitHub's API; one with user information would put a secret into
/// libgit2's error messages and our logs, so it is refused rather than used.
fn check_url(url: &str) -> Result<(), GitError> {
    let invalid = |reason| GitError::Invalid {
        what: "clone URL",
        // Never echo a URL that may hold a secret.
        value: url
            .split_once('@')
            .map_or(url, |(_, host)| host)
            .to_string(),
        reason,
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| invalid("expected an http(s) URL"))?;
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(invalid("expected an http(s) URL"));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(invalid(
            "the URL must not carry credentials; the token is passed separately",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_paths_are_lower_case_and_confined() {
        let cache = RepoCache::new(Path::new("/data"));
        assert_eq!(
            cache.mirror_path("Acme/App").expect("valid"),
            Path::new("/data/repos/acme/app.git")
        );
        assert!(cache.mirror_path("acme/.github").is_ok());
        for bad in [
            "acme",
            "acme/..",
            "../app",
            "acme/a/b",
            "acme/",
            "/app",
            "ac me/app",
        ] {
            assert!(cache.mirror_path(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn urls_with_credentials_are_refused_without_echoing_them() {
        assert!(check_url("https://github.com/acme/app.git").is_ok());
        assert!(check_url("http://127.0.0.1:8080/git/acme/app.git").is_ok());
        let err = check_url("https://x-access-token:ghs_secret@github.com/acme/app.git")
            .expect_err("credentials in the URL");
        assert!(!err.to_string().contains("ghs_secret"), "{err}");
        assert!(check_url("file:///tmp/repo").is_err());
        assert!(check_url("git@github.com:acme/app.git").is_err());
    }

    #[test]
    fn branch_names_are_checked() {
        assert!(check_branch("runbooks/12-upgrade-react").is_ok());
        assert!(check_branch("main").is_ok());
        for bad in ["", "a..b", "a b", "x.lock", "a~1", "refs/../x"] {
            assert!(check_branch(bad).is_err(), "{bad:?} accepted");
        }
    }
}
