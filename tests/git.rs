//! The git layer against the GitHub stand-in over real smart HTTP (`git http-backend`):
//! mirrors, working trees, commits and pushes, and where the installation token may not go.

use std::path::{Path, PathBuf};
use std::time::Duration;

use runbooks::git::{GitError, Identity, Remote, RepoCache, Worktree};
use runbooks_standin::StandIn;
use secrecy::SecretString;

const OWNER: &str = "acme";
const NAME: &str = "app";
const FULL_NAME: &str = "acme/app";
/// Every test is bounded; a hang (e.g. libgit2 retrying credentials forever) fails instead.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Fixture {
    standin: StandIn,
    token: String,
    secret: SecretString,
    clone_url: String,
    data: tempfile::TempDir,
    cache: RepoCache,
}

/// Everything the crate logs in this test binary, at every level, so a test can check that
/// no log line carries a token. (A global subscriber: the git work runs on blocking threads,
/// which a thread-local one would miss.)
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("runbooks=trace"))
            .with_writer(|| LogWriter)
            .with_ansi(false)
            .init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

impl Fixture {
    async fn new(files: &[(&str, &str)]) -> Fixture {
        capture_logs();
        let standin = StandIn::start().await.expect("stand-in starts");
        standin
            .create_repo(OWNER, NAME, "main", files)
            .await
            .expect("repository created");
        let installation = standin.install(OWNER, &[NAME]);
        let token = standin.create_token(installation).expect("token minted");
        let clone_url = standin.clone_url(OWNER, NAME);
        let data = tempfile::tempdir().expect("data dir");
        let cache = RepoCache::new(data.path());
        Fixture {
            standin,
            secret: SecretString::from(token.clone()),
            token,
            clone_url,
            data,
            cache,
        }
    }

    fn remote(&self) -> Remote<'_> {
        Remote {
            full_name: FULL_NAME,
            clone_url: &self.clone_url,
            token: &self.secret,
        }
    }

    async fn worktree(&self, runbook: i64, branch: &str, base: &str) -> Worktree {
        self.cache
            .worktree(&self.remote(), runbook, branch, base)
            .await
            .expect("working tree prepared")
    }

    async fn remote_sha(&self, branch: &str) -> Option<String> {
        self.standin
            .branch_sha(OWNER, NAME, branch)
            .await
            .expect("stand-in branch")
    }

    async fn remote_file(&self, rev: &str, path: &str) -> Option<String> {
        self.standin
            .file(OWNER, NAME, rev, path)
            .await
            .expect("stand-in file")
    }
}

fn bot() -> Identity {
    Identity {
        name: "runbooks[bot]".to_string(),
        email: "142424242+runbooks[bot]@users.noreply.github.com".to_string(),
    }
}

fn write(dir: &Path, path: &str, content: &str) {
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
    std::fs::write(file, content).expect("write");
}

fn read(dir: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(path)).ok()
}

/// Every regular file under `dir`, recursively.
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("dir entry");
            let kind = entry.file_type().expect("file type");
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                out.push(entry.path());
            }
        }
    }
    out
}

/// The engine's repository of a working tree: its git directory (outside the tree) with the
/// tree as working directory, opened as the engine opens it.
fn engine_repo(wt: &Worktree) -> git2::Repository {
    let repo = git2::Repository::open_bare(wt.git_dir()).expect("open the git directory");
    repo.set_workdir(wt.path(), false)
        .expect("set the working tree");
    repo
}

/// Paths git reports as not clean (modified, staged, untracked; ignored files excluded).
fn dirty_paths(wt: &Worktree) -> Vec<String> {
    let repo = engine_repo(wt);
    let mut options = git2::StatusOptions::new();
    options.include_untracked(true).recurse_untracked_dirs(true);
    let statuses = repo.statuses(Some(&mut options)).expect("statuses");
    statuses
        .iter()
        .map(|s| s.path().unwrap_or_default().to_string())
        .collect()
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("the test finished in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_is_created_once_then_updated_by_fetch_with_pruning() {
    bounded(async {
        let fx = Fixture::new(&[("README.md", "hello\n")]).await;
        let path = fx.cache.update_mirror(&fx.remote()).await.expect("mirror");
        assert_eq!(path, fx.data.path().join("repos/acme/app.git"));
        let mirror_sha = |branch: &str| {
            git2::Repository::open_bare(&path)
                .expect("a bare mirror")
                .refname_to_id(&format!("refs/heads/{branch}"))
                .ok()
                .map(|oid| oid.to_string())
        };
        assert_eq!(mirror_sha("main"), fx.remote_sha("main").await);

        // A marker inside the mirror and the directory's identity survive the next update:
        // the mirror is fetched into, not cloned again.
        std::fs::write(path.join("marker"), "kept").expect("marker");
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).expect("stat"));

        let new_main = fx
            .standin
            .push_commit(OWNER, NAME, "main", &[("a.txt", "a\n")], "Add a", "alice")
            .await
            .expect("push on main");
        let feature = fx
            .standin
            .push_commit(
                OWNER,
                NAME,
                "feature",
                &[("f.txt", "f\n")],
                "Add f",
                "alice",
            )
            .await
            .expect("push on feature");
        fx.cache.update_mirror(&fx.remote()).await.expect("fetch");
        assert_eq!(mirror_sha("main"), Some(new_main));
        assert_eq!(mirror_sha("feature"), Some(feature));
        assert_eq!(
            std::fs::read_to_string(path.join("marker")).ok().as_deref(),
            Some("kept")
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).expect("stat")),
            inode
        );

        // A branch deleted on the remote disappears from the mirror.
        fx.standin
            .delete_branch(OWNER, NAME, "feature")
            .await
            .expect("delete");
        fx.cache.update_mirror(&fx.remote()).await.expect("fetch");
        assert_eq!(mirror_sha("feature"), None);
        assert!(mirror_sha("main").is_some());
        // Only one mirror directory (no leftovers from the atomic creation).
        let siblings: Vec<_> = std::fs::read_dir(fx.data.path().join("repos/acme"))
            .expect("owner dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(siblings, vec![std::ffi::OsString::from("app.git")]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_on_a_new_branch_are_pushed_as_the_given_identity() {
    bounded(async {
        let fx = Fixture::new(&[("README.md", "hello\n"), ("src/lib.rs", "// lib\n")]).await;
        let main = fx.remote_sha("main").await.expect("main");
        let wt = fx.worktree(1, "runbooks/1-greet", "main").await;
        assert_eq!(wt.path(), fx.data.path().join("worktrees/runbook-1/tree"));
        // The engine's git directory is beside the tree, not in it: what an agent sees has
        // no `.git`.
        assert_eq!(wt.git_dir(), fx.data.path().join("worktrees/runbook-1/git"));
        assert!(!wt.path().join(".git").exists());
        assert_eq!(wt.branch(), "runbooks/1-greet");
        assert_eq!(wt.head().await.expect("head"), main);
        assert_eq!(read(wt.path(), "src/lib.rs").as_deref(), Some("// lib\n"));

        write(wt.path(), "README.md", "hello, world\n");
        write(wt.path(), "docs/greeting.md", "# Greeting\n");
        let message = "Greet the world\n\nRunbook: 1\nRunbook-Step: 1.1\n";
        let sha = wt
            .commit_all(message, &bot())
            .await
            .expect("commit")
            .expect("a commit, since files changed");
        assert_eq!(wt.head().await.expect("head"), sha);
        assert_eq!(wt.push(&fx.remote()).await.expect("push"), sha);

        assert_eq!(fx.remote_sha("runbooks/1-greet").await, Some(sha.clone()));
        assert_eq!(
            fx.remote_sha("main").await,
            Some(main.clone()),
            "main untouched"
        );
        assert_eq!(
            fx.remote_file("runbooks/1-greet", "README.md")
                .await
                .as_deref(),
            Some("hello, world\n")
        );
        assert_eq!(
            fx.remote_file("runbooks/1-greet", "docs/greeting.md")
                .await
                .as_deref(),
            Some("# Greeting\n")
        );
        let messages = fx
            .standin
            .commit_messages(OWNER, NAME, "runbooks/1-greet")
            .await
            .expect("log");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0], message.trim());

        // Author and committer, as the server stores them.
        let server = git2::Repository::open_bare(fx.standin.repo_path(OWNER, NAME)).expect("bare");
        let commit = server
            .find_commit(git2::Oid::from_str(&sha).expect("oid"))
            .expect("pushed commit");
        for who in [commit.author(), commit.committer()] {
            assert_eq!(who.name().ok(), Some("runbooks[bot]"));
            assert_eq!(
                who.email().ok(),
                Some("142424242+runbooks[bot]@users.noreply.github.com")
            );
        }
        assert_eq!(commit.parent_id(0).expect("parent").to_string(), main);

        // Nothing changed since: no empty commit, and pushing again is a no-op.
        assert_eq!(
            wt.commit_all("Nothing", &bot()).await.expect("commit"),
            None
        );
        assert_eq!(wt.head().await.expect("head"), sha);
        assert_eq!(wt.push(&fx.remote()).await.expect("push"), sha);
        assert_eq!(fx.remote_sha("runbooks/1-greet").await, Some(sha));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_are_committed_and_ignored_files_are_not() {
    bounded(async {
        let fx = Fixture::new(&[
            (".gitignore", "target/\n*.log\n"),
            ("old.txt", "old\n"),
            ("keep/a.txt", "a\n"),
            ("keep/b.txt", "b\n"),
            ("swap", "a file that becomes a directory\n"),
        ])
        .await;
        let wt = fx.worktree(2, "runbooks/2", "main").await;

        // Only ignored files: nothing to commit.
        write(wt.path(), "target/debug/out.bin", "binary");
        write(wt.path(), "build.log", "log");
        assert_eq!(
            wt.commit_all("Ignored only", &bot()).await.expect("commit"),
            None
        );

        std::fs::remove_file(wt.path().join("old.txt")).expect("rm");
        std::fs::remove_file(wt.path().join("keep/b.txt")).expect("rm");
        write(wt.path(), "new.txt", "new\n");
        std::fs::remove_file(wt.path().join("swap")).expect("rm");
        write(wt.path(), "swap/inner.txt", "inner\n");
        // An agent that cloned something into the tree: not committed, and no failure.
        git2::Repository::init(wt.path().join("vendor/nested")).expect("nested repository");
        write(wt.path(), "vendor/nested/lib.txt", "nested\n");
        let sha = wt
            .commit_all("Delete and add", &bot())
            .await
            .expect("commit")
            .expect("changes");
        wt.push(&fx.remote()).await.expect("push");

        assert_eq!(fx.remote_file(&sha, "old.txt").await, None);
        assert_eq!(fx.remote_file(&sha, "keep/b.txt").await, None);
        assert_eq!(
            fx.remote_file(&sha, "keep/a.txt").await.as_deref(),
            Some("a\n")
        );
        assert_eq!(
            fx.remote_file(&sha, "new.txt").await.as_deref(),
            Some("new\n")
        );
        assert_eq!(fx.remote_file(&sha, "build.log").await, None);
        assert_eq!(fx.remote_file(&sha, "target/debug/out.bin").await, None);
        assert_eq!(
            fx.remote_file(&sha, "swap/inner.txt").await.as_deref(),
            Some("inner\n")
        );
        assert_eq!(fx.remote_file(&sha, "vendor/nested/lib.txt").await, None);
        assert_eq!(dirty_paths(&wt), vec!["vendor/nested/".to_string()]);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preparing_again_resumes_at_the_remote_head_and_cleans_the_tree() {
    bounded(async {
        let fx = Fixture::new(&[(".gitignore", "cache/\n"), ("app.txt", "v1\n")]).await;
        let branch = "runbooks/7";
        let wt = fx.worktree(7, branch, "main").await;
        write(wt.path(), "app.txt", "v2\n");
        let pushed = wt
            .commit_all("Step 1", &bot())
            .await
            .expect("commit")
            .expect("change");
        wt.push(&fx.remote()).await.expect("push");

        // Someone adds a commit to the branch on GitHub (a follow-up), and the process dies
        // leaving the tree dirty: a modified file, untracked files and directories, an
        // unpushed commit, an ignored cache.
        let remote_head = fx
            .standin
            .push_commit(
                OWNER,
                NAME,
                branch,
                &[("review.txt", "fixup\n")],
                "Review",
                "alice",
            )
            .await
            .expect("push by a person");
        write(wt.path(), "local.txt", "unpushed\n");
        wt.commit_all("Unpushed", &bot())
            .await
            .expect("commit")
            .expect("change");
        write(wt.path(), "app.txt", "half-written\n");
        write(wt.path(), "stray.txt", "stray\n");
        write(wt.path(), "scratch/deep/file.txt", "stray\n");
        write(wt.path(), "cache/blob", "cached\n");

        let again = fx.worktree(7, branch, "main").await;
        assert_eq!(again.path(), wt.path());
        assert_eq!(again.head().await.expect("head"), remote_head);
        assert_eq!(read(again.path(), "app.txt").as_deref(), Some("v2\n"));
        assert_eq!(read(again.path(), "review.txt").as_deref(), Some("fixup\n"));
        assert_eq!(
            read(again.path(), "local.txt"),
            None,
            "unpushed work dropped"
        );
        assert_eq!(read(again.path(), "stray.txt"), None);
        assert!(!again.path().join("scratch").exists());
        assert_eq!(
            read(again.path(), "cache/blob").as_deref(),
            Some("cached\n"),
            "ignored files are kept"
        );
        assert!(dirty_paths(&again).is_empty());
        assert_ne!(pushed, remote_head);

        // Preparing is idempotent.
        let third = fx.worktree(7, branch, "main").await;
        assert_eq!(third.head().await.expect("head"), remote_head);
        assert!(dirty_paths(&third).is_empty());

        // A working tree lost entirely (another replica picks the runbook up) resumes too.
        let elsewhere = fx.worktree(8, branch, "main").await;
        assert_eq!(elsewhere.head().await.expect("head"), remote_head);

        // Work continues on top and pushes as a fast-forward.
        write(again.path(), "app.txt", "v3\n");
        let next = again
            .commit_all("Step 2", &bot())
            .await
            .expect("commit")
            .expect("change");
        again.push(&fx.remote()).await.expect("fast-forward push");
        assert_eq!(fx.remote_sha(branch).await, Some(next));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stacked_branches_start_from_the_previous_branch() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;
        let first = fx.worktree(3, "runbooks/3/1", "main").await;
        write(first.path(), "one.txt", "1\n");
        let one = first
            .commit_all("One", &bot())
            .await
            .expect("commit")
            .expect("change");
        first.push(&fx.remote()).await.expect("push");

        let second = fx.worktree(3, "runbooks/3/2", "runbooks/3/1").await;
        assert_eq!(second.head().await.expect("head"), one);
        write(second.path(), "two.txt", "2\n");
        let two = second
            .commit_all("Two", &bot())
            .await
            .expect("commit")
            .expect("change");
        second.push(&fx.remote()).await.expect("push");
        assert_eq!(fx.remote_sha("runbooks/3/1").await, Some(one));
        assert_eq!(fx.remote_sha("runbooks/3/2").await, Some(two.clone()));
        assert_eq!(
            fx.remote_file(&two, "one.txt").await.as_deref(),
            Some("1\n")
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbooks_on_one_repository_prepare_concurrently() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;
        let remote = fx.remote();
        let shared = fx.cache.clone();
        let (a, b, c) = tokio::join!(
            fx.cache.worktree(&remote, 10, "runbooks/10", "main"),
            fx.cache.worktree(&remote, 11, "runbooks/11", "main"),
            shared.worktree(&remote, 12, "runbooks/12", "main"),
        );
        let main = fx.remote_sha("main").await.expect("main");
        for wt in [a, b, c] {
            let wt = wt.expect("prepared");
            assert_eq!(wt.head().await.expect("head"), main);
            assert_eq!(read(wt.path(), "a.txt").as_deref(), Some("a\n"));
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_reaches_disk() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;
        let wt = fx.worktree(4, "runbooks/4", "main").await;
        write(wt.path(), "b.txt", "b\n");
        wt.commit_all("B", &bot())
            .await
            .expect("commit")
            .expect("change");
        wt.push(&fx.remote()).await.expect("push");
        fx.cache.update_mirror(&fx.remote()).await.expect("fetch");
        fx.worktree(4, "runbooks/4", "main").await;

        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("x-access-token:{}", fx.token));
        let files = all_files(fx.data.path());
        assert!(files.len() > 10, "the walk saw the repositories");
        for file in &files {
            let bytes = std::fs::read(file).expect("read");
            for secret in [fx.token.as_bytes(), basic.as_bytes()] {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret),
                    "the token is in {}",
                    file.display()
                );
            }
        }
        // Nor any log line, at any level.
        let logs = logs();
        assert!(logs.contains("pushed"), "the logs were captured");
        assert!(!logs.contains(&fx.token) && !logs.contains(&basic));
        // The configurations name no remote at all (anonymous remotes), so no URL is kept.
        let configs = [
            fx.data.path().join("repos/acme/app.git/config"),
            wt.git_dir().join("config"),
        ];
        for config in configs {
            let text = std::fs::read_to_string(&config).expect("config");
            assert!(!text.contains("[remote"), "{}: {text}", config.display());
            assert!(!text.contains("url"), "{}: {text}", config.display());
            assert!(
                !text.contains("x-access-token"),
                "{}: {text}",
                config.display()
            );
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_fails_clearly_after_a_bounded_number_of_attempts() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;
        let wrong = SecretString::from("ghs_wrongwrongwrong".to_string());
        let remote = Remote {
            full_name: FULL_NAME,
            clone_url: &fx.clone_url,
            token: &wrong,
        };

        let err = fx
            .cache
            .update_mirror(&remote)
            .await
            .expect_err("a wrong token is refused");
        assert!(err.is_auth(), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("refused the installation token"),
            "{message}"
        );
        assert!(message.contains(FULL_NAME), "{message}");
        assert!(!message.contains("ghs_wrong"), "{message}");
        let attempts = fx.standin.requests_for("git/info-refs").len();
        assert!(
            (2..=4).contains(&attempts),
            "{attempts} requests for one fetch with a wrong token"
        );
        // No half-created mirror is left behind.
        assert!(!fx.data.path().join("repos/acme/app.git").exists());

        // Pushing with a wrong token, from a tree prepared with the right one.
        let wt = fx.worktree(5, "runbooks/5", "main").await;
        write(wt.path(), "b.txt", "b\n");
        wt.commit_all("B", &bot())
            .await
            .expect("commit")
            .expect("change");
        fx.standin.clear_requests();
        let err = wt
            .push(&remote)
            .await
            .expect_err("a wrong token is refused");
        assert!(matches!(err, GitError::Auth { .. }), "{err:?}");
        assert!(fx.standin.requests_for("git/info-refs").len() <= 4);
        assert_eq!(fx.remote_sha("runbooks/5").await, None);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_that_moved_on_the_remote_is_rejected_unless_forced() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;
        let branch = "runbooks/6";
        let wt = fx.worktree(6, branch, "main").await;
        write(wt.path(), "b.txt", "b\n");
        wt.commit_all("B", &bot())
            .await
            .expect("commit")
            .expect("change");
        wt.push(&fx.remote()).await.expect("push");
        let theirs = fx
            .standin
            .push_commit(OWNER, NAME, branch, &[("c.txt", "c\n")], "C", "alice")
            .await
            .expect("push by a person");

        write(wt.path(), "d.txt", "d\n");
        let ours = wt
            .commit_all("D", &bot())
            .await
            .expect("commit")
            .expect("change");
        let err = wt.push(&fx.remote()).await.expect_err("not a fast-forward");
        assert!(matches!(err, GitError::Rejected { .. }), "{err:?}");
        assert!(err.to_string().contains(branch), "{err}");
        assert_eq!(fx.remote_sha(branch).await, Some(theirs));

        assert_eq!(wt.force_push(&fx.remote()).await.expect("forced"), ours);
        assert_eq!(fx.remote_sha(branch).await, Some(ours));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_base_branch_is_a_clear_error() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;
        let err = fx
            .cache
            .worktree(&fx.remote(), 9, "runbooks/9", "no-such-branch")
            .await
            .expect_err("missing base");
        assert!(matches!(err, GitError::BranchNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("no-such-branch"), "{err}");

        let err = fx
            .cache
            .worktree(&fx.remote(), 9, "bad..name", "main")
            .await
            .expect_err("invalid branch");
        assert!(matches!(err, GitError::Invalid { .. }), "{err:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_trees_serve_later_runbooks_clean_and_the_pool_is_bounded() {
    bounded(async {
        let fx = Fixture::new(&[(".gitignore", "cache/\n"), ("a.txt", "a\n")]).await;
        let main = fx.remote_sha("main").await.expect("main");
        let first = fx.worktree(20, "runbooks/20", "main").await;
        write(first.path(), "feature.txt", "feature\n");
        first
            .commit_all("Feature", &bot())
            .await
            .expect("commit")
            .expect("change");
        first.push(&fx.remote()).await.expect("push");
        write(first.path(), "stray.txt", "stray\n");
        write(first.path(), "cache/blob", "cached\n");
        let git_dir_inode = |wt: &Worktree| {
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(wt.git_dir()).expect("stat"))
        };
        let inode = git_dir_inode(&first);

        fx.cache.release(FULL_NAME, 20).await.expect("release");
        assert!(!first.path().exists());

        // The next runbook gets the released tree, clean and on its own branch.
        let next = fx.worktree(21, "runbooks/21", "main").await;
        assert_eq!(git_dir_inode(&next), inode, "the released tree was reused");
        assert_eq!(next.head().await.expect("head"), main);
        assert_eq!(read(next.path(), "a.txt").as_deref(), Some("a\n"));
        for leftover in ["feature.txt", "stray.txt", "cache/blob"] {
            assert_eq!(read(next.path(), leftover), None, "{leftover} left over");
        }
        assert!(dirty_paths(&next).is_empty());
        let repo = engine_repo(&next);
        let branches: Vec<String> = repo
            .branches(Some(git2::BranchType::Local))
            .expect("branches")
            .map(|b| {
                let (b, _) = b.expect("branch");
                b.name().expect("name").expect("utf-8").to_string()
            })
            .collect();
        assert_eq!(branches, vec!["runbooks/21".to_string()]);

        // At most two idle trees per repository; the others are deleted.
        for runbook in 22..=24 {
            fx.worktree(runbook, &format!("runbooks/{runbook}"), "main")
                .await;
        }
        for runbook in 21..=24 {
            fx.cache.release(FULL_NAME, runbook).await.expect("release");
            assert!(!fx.cache.worktree_path(runbook).exists());
        }
        let idle = std::fs::read_dir(fx.data.path().join("worktrees/idle/acme/app"))
            .expect("pool")
            .count();
        assert_eq!(idle, 2);
        // Releasing a runbook without a tree is not an error.
        fx.cache
            .release(FULL_NAME, 99)
            .await
            .expect("nothing to release");
    })
    .await
}

/// What the repository's setup leaves in a tree stays out of commits (a changed tracked file
/// is restored, an untracked one is excluded in the engine's git directory and survives the
/// next step's reset), the tree stays marked set up for its runbook, and a released tree
/// forgets both before another runbook gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_leftovers_stay_out_of_commits_and_released_trees_forget_them() {
    bounded(async {
        let fx = Fixture::new(&[(".gitignore", "ignored/\n"), ("a.txt", "a\n")]).await;
        let wt = fx.worktree(30, "runbooks/30", "main").await;
        assert!(!wt.is_set_up());
        write(wt.path(), "a.txt", "changed by setup\n");
        write(wt.path(), "tool.bin", "untracked\n");
        write(wt.path(), "gen/code.rs", "generated\n");
        write(wt.path(), "we*ird [name]", "odd\n");
        write(wt.path(), "ignored/cache", "ignored\n");
        let leftovers = wt.keep_setup_out_of_commits().await.expect("kept out");
        assert_eq!(leftovers.restored, ["a.txt"]);
        let mut excluded = leftovers.excluded.clone();
        excluded.sort();
        assert_eq!(excluded, ["gen/", "tool.bin", "we*ird [name]"]);
        wt.mark_set_up().await.expect("marked");
        assert_eq!(read(wt.path(), "a.txt").as_deref(), Some("a\n"));
        assert!(dirty_paths(&wt).is_empty(), "{:?}", dirty_paths(&wt));

        // A step's own new file is committed; the setup's are not, and stay for the next step.
        write(wt.path(), "step.txt", "step\n");
        write(wt.path(), "weird", "a step's file\n");
        wt.commit_all("Step", &bot())
            .await
            .expect("commit")
            .expect("change");
        let repo = engine_repo(&wt);
        let tree = repo.head().unwrap().peel_to_tree().unwrap();
        let mut committed: Vec<String> =
            tree.iter().map(|e| e.name().unwrap().to_string()).collect();
        committed.sort();
        assert_eq!(committed, [".gitignore", "a.txt", "step.txt", "weird"]);
        wt.push(&fx.remote()).await.expect("push");
        let again = fx.worktree(30, "runbooks/30", "main").await;
        assert!(again.is_set_up());
        assert_eq!(
            read(again.path(), "tool.bin").as_deref(),
            Some("untracked\n")
        );
        assert_eq!(
            read(again.path(), "gen/code.rs").as_deref(),
            Some("generated\n")
        );

        // Released and taken by another runbook: not set up, nothing excluded any more.
        fx.cache.release(FULL_NAME, 30).await.expect("release");
        let next = fx.worktree(31, "runbooks/31", "main").await;
        assert!(!next.is_set_up());
        assert_eq!(read(next.path(), "tool.bin"), None);
        write(next.path(), "tool.bin", "a step's own\n");
        next.commit_all("Step", &bot())
            .await
            .expect("commit")
            .expect("tool.bin is committed now");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committing_refuses_a_tree_moved_off_its_branch() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;
        let wt = fx.worktree(30, "runbooks/30", "main").await;
        let repo = engine_repo(&wt);
        let head = repo.head().expect("head").target().expect("direct");
        repo.set_head_detached(head).expect("detach");
        write(wt.path(), "b.txt", "b\n");
        let err = wt.commit_all("B", &bot()).await.expect_err("detached HEAD");
        assert!(matches!(err, GitError::NotOnBranch { .. }), "{err:?}");
        assert!(err.to_string().contains("runbooks/30"), "{err}");
    })
    .await
}

/// A loopback listener that counts every connection made to it: where a hijacked push or a
/// stolen token would go. Tests assert it never sees one.
struct Trap {
    url: String,
    seen: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Trap {
    async fn start() -> Trap {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        tokio::spawn(async move {
            while let Ok((_socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        Trap { url, seen }
    }

    fn connections(&self) -> usize {
        self.seen.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// What a hostile step writes under `.git` in its tree — a repository of its own whose
/// configuration rewrites the push URL to a trap, moves the work tree onto a victim
/// directory, ignores everything, and carries hooks — steers nothing the engine does: the
/// commit holds the step's files and no `.git`, the push goes to the clone URL, the trap sees
/// nothing, the victim is untouched, and the `.git` is gone when the tree is prepared again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_directory_written_by_a_step_steers_nothing() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;
        let trap = Trap::start().await;
        let victim = tempfile::tempdir().expect("victim");
        write(victim.path(), "precious.txt", "keep me\n");
        let wt = fx.worktree(40, "runbooks/40", "main").await;

        let clone_base = fx.clone_url.rsplit_once('/').expect("a path").0;
        let hostile = git2::Repository::init(wt.path()).expect("the step's own git init");
        let mut config = hostile.config().expect("config");
        for (key, value) in [
            (
                format!("url.{}/.pushInsteadOf", trap.url),
                format!("{clone_base}/"),
            ),
            (
                format!("url.{}/.insteadOf", trap.url),
                format!("{clone_base}/"),
            ),
            (
                "core.worktree".to_string(),
                victim.path().display().to_string(),
            ),
            ("http.proxy".to_string(), trap.url.clone()),
            (
                "core.hooksPath".to_string(),
                victim.path().display().to_string(),
            ),
        ] {
            config.set_str(&key, &value).expect("hostile setting");
        }
        write(wt.path(), ".git/info/exclude", "*\n");
        write(
            wt.path(),
            ".git/hooks/pre-push",
            "#!/bin/sh\ntouch /tmp/pwned\n",
        );
        write(wt.path(), "b.txt", "the step's change\n");

        let sha = wt
            .commit_all("B", &bot())
            .await
            .expect("commit")
            .expect("the step's change is committed");
        wt.push(&fx.remote()).await.expect("push to the clone URL");

        assert_eq!(fx.remote_sha("runbooks/40").await, Some(sha.clone()));
        assert_eq!(
            fx.remote_file(&sha, "b.txt").await.as_deref(),
            Some("the step's change\n")
        );
        assert_eq!(fx.remote_file(&sha, ".git/config").await, None);
        assert_eq!(trap.connections(), 0, "the push went to the trap");
        assert_eq!(
            read(victim.path(), "precious.txt").as_deref(),
            Some("keep me\n")
        );
        assert_eq!(std::fs::read_dir(victim.path()).expect("victim").count(), 1);

        // Prepared again (the next step, or a retry): the step's `.git` is gone.
        let again = fx.worktree(40, "runbooks/40", "main").await;
        assert!(!again.path().join(".git").exists());
        fx.cache.release(FULL_NAME, 40).await.expect("release");
        assert_eq!(
            read(victim.path(), "precious.txt").as_deref(),
            Some("keep me\n")
        );
        assert_eq!(trap.connections(), 0);
    })
    .await
}

/// Symbolic links are committed as links, and nothing the engine does follows one out of the
/// tree: a link to a victim directory, and a tracked directory replaced by such a link, leave
/// the victim untouched through commit, preparing again and release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_out_of_the_tree_are_committed_as_links_and_never_followed() {
    bounded(async {
        let fx = Fixture::new(&[("src/lib.rs", "// lib\n"), ("a.txt", "a\n")]).await;
        let victim = tempfile::tempdir().expect("victim");
        write(victim.path(), "precious.txt", "keep me\n");
        write(victim.path(), "lib.rs", "// the victim's own\n");
        let wt = fx.worktree(41, "runbooks/41", "main").await;

        std::os::unix::fs::symlink(victim.path(), wt.path().join("out")).expect("link");
        std::fs::remove_dir_all(wt.path().join("src")).expect("rm src");
        std::os::unix::fs::symlink(victim.path(), wt.path().join("src")).expect("link");
        // A FIFO would block a reader forever: it must not hang the commit.
        let made = std::process::Command::new("mkfifo")
            .arg(wt.path().join("pipe"))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());

        let sha = wt
            .commit_all("Links", &bot())
            .await
            .expect("commit")
            .expect("changes");
        wt.push(&fx.remote()).await.expect("push");
        let server = git2::Repository::open_bare(fx.standin.repo_path(OWNER, NAME)).expect("bare");
        let tree = server
            .find_commit(git2::Oid::from_str(&sha).expect("oid"))
            .expect("commit")
            .tree()
            .expect("tree");
        for link in ["out", "src"] {
            let entry = tree.get_name(link).expect("the link is committed");
            assert_eq!(entry.filemode(), 0o120000, "{link} is committed as a link");
            let blob = server.find_blob(entry.id()).expect("blob");
            assert_eq!(blob.content(), victim.path().as_os_str().as_encoded_bytes());
        }
        assert!(tree.get_path(Path::new("precious.txt")).is_err());
        assert!(tree.get_name("pipe").is_none());

        // Back to main: `src` becomes a directory again, without writing through the link.
        let back = fx.worktree(41, "runbooks/41-b", "main").await;
        assert_eq!(read(back.path(), "src/lib.rs").as_deref(), Some("// lib\n"));
        fx.cache.release(FULL_NAME, 41).await.expect("release");
        assert_eq!(
            read(victim.path(), "precious.txt").as_deref(),
            Some("keep me\n")
        );
        assert_eq!(
            read(victim.path(), "lib.rs").as_deref(),
            Some("// the victim's own\n")
        );
        assert_eq!(std::fs::read_dir(victim.path()).expect("victim").count(), 2);
    })
    .await
}

/// A git server on loopback that answers every request with a redirect to `target`.
async fn redirector(target: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("port");
    let url = format!(
        "http://{}/acme/app.git",
        listener.local_addr().expect("address")
    );
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 301 Moved Permanently\r\nLocation: {target}/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    url
}

/// The credentials go only to the clone URL. A remote that redirects to another host is not
/// followed at all; one that redirects to another port of the same host (libgit2 follows
/// those) meets a server asking for credentials, and gets none: the fetch fails naming why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirecting_remote_gets_no_credentials() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n")]).await;

        // Another host (127.0.0.2 is loopback too, but another host name to libgit2).
        let far = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("a port on 127.0.0.2");
        let far_url = format!("http://{}/acme/app.git", far.local_addr().expect("address"));
        let far_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = far_seen.clone();
        tokio::spawn(async move {
            while far.accept().await.is_ok() {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let url = redirector(far_url).await;
        let remote = Remote {
            full_name: FULL_NAME,
            clone_url: &url,
            token: &fx.secret,
        };
        let cache = RepoCache::new(&fx.data.path().join("far"));
        let err = cache.update_mirror(&remote).await.expect_err("not followed");
        assert!(!err.to_string().contains(&fx.token), "{err}");
        assert_eq!(far_seen.load(std::sync::atomic::Ordering::SeqCst), 0);

        // The same host, another port: a server that asks for credentials, and records
        // every Authorization header it is sent.
        let near = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("port");
        let near_url = format!("http://{}/acme/app.git", near.local_addr().expect("address"));
        let credentials = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (seen, count) = (credentials.clone(), requests.clone());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            while let Ok((mut socket, _)) = near.accept().await {
                let mut buf = vec![0u8; 8192];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                seen.lock()
                    .expect("lock")
                    .extend(head.lines().filter(|l| l.starts_with("authorization")).map(String::from));
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
            }
        });
        let url = redirector(near_url).await;
        let remote = Remote {
            full_name: FULL_NAME,
            clone_url: &url,
            token: &fx.secret,
        };
        let cache = RepoCache::new(&fx.data.path().join("near"));
        let err = cache.update_mirror(&remote).await.expect_err("no credentials");
        assert!(matches!(err, GitError::ForeignUrl { .. }), "{err:?}");
        assert!(err.to_string().contains("clone URL"), "{err}");
        assert!(requests.load(std::sync::atomic::Ordering::SeqCst) >= 1, "the redirect was taken");
        assert_eq!(*credentials.lock().expect("lock"), Vec::<String>::new());
    })
    .await
}

/// Files git reads from the tree itself (`.gitignore`, `.gitattributes`, `.gitmodules`) are
/// a step's to write too. As FIFOs (a read that never ends) they are removed before git looks;
/// as links (to `/dev/zero`, or a device of the server's machine) the commit is refused with
/// a reason instead of following them; preparing the tree again deletes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_where_git_reads_its_rules_do_not_hang_the_engine() {
    bounded(async {
        let fx = Fixture::new(&[("a.txt", "a\n"), ("sub/b.txt", "b\n")]).await;
        let wt = fx.worktree(42, "runbooks/42", "main").await;
        let made = std::process::Command::new("mkfifo")
            .arg(wt.path().join(".gitignore"))
            .arg(wt.path().join("sub/.gitignore"))
            .arg(wt.path().join("sub/.gitmodules"))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        std::os::unix::fs::symlink("/dev/zero", wt.path().join("sub/.GitAttributes"))
            .expect("link");
        write(wt.path(), "c.txt", "c\n");
        let err = wt
            .commit_all("C", &bot())
            .await
            .expect_err("a linked rule file is refused");
        assert!(matches!(err, GitError::UnsafeTree { .. }), "{err:?}");
        assert!(err.to_string().contains("sub/.GitAttributes"), "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");

        std::fs::remove_file(wt.path().join("sub/.GitAttributes")).expect("rm");
        let sha = wt
            .commit_all("C", &bot())
            .await
            .expect("commit")
            .expect("a change");
        wt.push(&fx.remote()).await.expect("push");
        assert_eq!(fx.remote_file(&sha, "c.txt").await.as_deref(), Some("c\n"));
        assert_eq!(fx.remote_file(&sha, ".gitignore").await, None);
        assert!(!wt.path().join("sub/.gitignore").exists());

        // Left by a step that failed: preparing the tree again does not follow or wait.
        std::os::unix::fs::symlink("/dev/zero", wt.path().join(".gitattributes")).expect("link");
        let made = std::process::Command::new("mkfifo")
            .arg(wt.path().join(".gitignore"))
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        let again = fx.worktree(42, "runbooks/42", "main").await;
        assert!(std::fs::symlink_metadata(again.path().join(".gitattributes")).is_err());
        assert!(std::fs::symlink_metadata(again.path().join(".gitignore")).is_err());
        assert_eq!(again.head().await.expect("head"), sha);
    })
    .await
}

/// A process killed in the middle of a git update leaves lock files: a branch's ref lock and
/// the index's in the runbook's git directory, a ref's and `packed-refs`' in the mirror.
/// The next process to take the runbook prepares, commits, pushes and fetches regardless
/// (the chaos test met a step failed for good on `refs/heads/runbooks/2/step-1.lock`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_files_left_by_a_killed_process_are_cleared() {
    bounded(async {
        let fx = Fixture::new(&[("app.txt", "v1\n")]).await;
        let branch = "runbooks/3/step-1";
        let wt = fx.worktree(3, branch, "main").await;
        write(wt.path(), "app.txt", "v2\n");
        wt.commit_all("Step 1", &bot())
            .await
            .expect("commit")
            .expect("change");
        wt.push(&fx.remote()).await.expect("push");

        let git = wt.git_dir();
        let mirror = fx.data.path().join("repos/acme/app.git");
        let stale = [
            git.join(format!("refs/heads/{branch}.lock")),
            git.join("index.lock"),
            git.join("packed-refs.lock"),
            mirror.join("refs/heads/main.lock"),
            mirror.join("packed-refs.lock"),
        ];
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        for lock in &stale {
            std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
            let file = std::fs::File::create(lock).expect("a lock file");
            file.set_modified(hour_ago).expect("its age");
        }
        let moved = fx
            .standin
            .push_commit(OWNER, NAME, "main", &[("b.txt", "b\n")], "B", "alice")
            .await
            .expect("a push on main");

        fx.cache.update_mirror(&fx.remote()).await.expect("fetch");
        let again = fx.worktree(3, branch, "main").await;
        write(again.path(), "app.txt", "v3\n");
        let next = again
            .commit_all("Step 2", &bot())
            .await
            .expect("commit")
            .expect("change");
        again.push(&fx.remote()).await.expect("push");
        assert_eq!(fx.remote_sha(branch).await, Some(next));
        let mirrored = git2::Repository::open_bare(&mirror)
            .unwrap()
            .refname_to_id("refs/heads/main")
            .unwrap()
            .to_string();
        assert_eq!(mirrored, moved);
        for lock in &stale {
            assert!(!lock.exists(), "{} is left", lock.display());
        }

        // However recent, a lock in the mirror is a leftover: a fetch holds the mirror's turn
        // (a lock the kernel drops with its holder), so no other process is updating it.
        let fresh = mirror.join("refs/heads/fresh.lock");
        std::fs::File::create(&fresh).expect("a lock file");
        fx.cache.update_mirror(&fx.remote()).await.expect("fetch");
        assert!(!fresh.exists());
    })
    .await
}

/// Pushes and fetches while the process is flooded with signals it handles (the server has
/// handlers: tokio's SIGCHLD for agent processes, SIGTERM): libgit2 waits on its sockets
/// with timeouts, which a signal interrupts for good (EINTR, "error receiving data from
/// socket: Interrupted system call") unless the git thread blocks them. Run in a child
/// process of this test binary, so that the flood reaches no other test.
#[test]
fn git_work_survives_a_flood_of_signals() {
    let output = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "signal_flood_child", "--ignored", "--nocapture"])
        .env("RUNBOOKS_TEST_SIGNAL_FLOOD", "1")
        .output()
        .expect("the child test runs");
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("1 passed"),
        "the child test ran"
    );
}

/// The child of [`git_work_survives_a_flood_of_signals`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by git_work_survives_a_flood_of_signals, in a process of its own"]
async fn signal_flood_child() {
    assert!(
        std::env::var_os("RUNBOOKS_TEST_SIGNAL_FLOOD").is_some(),
        "only as the child of git_work_survives_a_flood_of_signals"
    );
    // A handled signal, as the server's are.
    let mut handled = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        .expect("a handler");
    tokio::spawn(async move { while handled.recv().await.is_some() {} });
    let fx = Fixture::new(&[("README.md", "hello\n")]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            // To every thread in turn (a signal sent to the process mostly lands on the idle
            // main thread; the server's land on whichever thread does not block them).
            let pid = std::process::id() as libc::pid_t;
            // SAFETY: gettid(2) has no preconditions.
            let me = unsafe { libc::gettid() };
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for task in std::fs::read_dir("/proc/self/task").expect("the threads") {
                    let tid: libc::pid_t = task
                        .expect("a thread")
                        .file_name()
                        .to_string_lossy()
                        .parse()
                        .expect("a thread id");
                    if tid != me {
                        // SAFETY: tgkill(2) on a thread of this process with a signal that
                        // has a handler.
                        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) };
                        sent += 1;
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            sent
        })
    };
    let wt = fx.worktree(1, "runbooks/1-flood", "main").await;
    for round in 0..15 {
        // Enough content that the transfer takes several reads.
        let content: String = (0..20_000).map(|i| format!("{round}:{i}\n")).collect();
        write(wt.path(), &format!("data/{round}.txt"), &content);
        wt.commit_all(&format!("Round {round}"), &bot())
            .await
            .expect("commit")
            .expect("a change");
        wt.push(&fx.remote())
            .await
            .unwrap_or_else(|e| panic!("push {round}: {e:?}"));
        fx.cache
            .update_mirror(&fx.remote())
            .await
            .unwrap_or_else(|e| panic!("fetch {round}: {e:?}"));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().expect("the flood thread");
    println!("{sent} signals sent during the git work");
}
