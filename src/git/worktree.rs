//! Working trees: preparing one on a branch from the mirror, and committing in it.
//!
//! A runbook's working tree lives in a *slot*, `worktrees/runbook-<n>/`, holding two
//! directories side by side:
//!
//! - `git/`: the engine's git directory (a bare repository whose objects come from the mirror
//!   through `objects/info/alternates`). Only the engine opens it, always by this explicit
//!   path ([`open_slot`]), never by discovery; its configuration is the engine's own (nothing
//!   but what `git init` writes). It is not inside the tree, so the jail never shows it to an
//!   agent, and nothing an agent writes (a `.git` of its own, `.git/config` with
//!   `url.*.pushInsteadOf` or `core.worktree`, hooks, `info/exclude`, alternates, refs) is
//!   read by the engine's commit, push or checkout.
//! - `tree/`: the files, the only directory an agent sees. A `.git` entry there is the
//!   agent's own scratch: it is never staged, and it is deleted when the tree is prepared or
//!   released, so it reaches neither the next step nor the next runbook.
//!
//! Beside them, a file `setup-done` says the repository's setup ran in this tree (see
//! [`keep_setup_out`]); the files setup made that git does not ignore are listed in the
//! engine's own `git/info/exclude`, so no step commits them. Both are forgotten when the slot
//! is released or recycled for another runbook: a fresh tree is set up again.
//!
//! Symbolic links in the tree are committed as links (their target text), and every check
//! and deletion uses `lstat`: the engine never follows a link out of the tree.
//!
//! libgit2 itself opens some files of the tree while it stages or checks out: the rules in
//! `.gitignore`, `.gitattributes` and `.gitmodules`, following links and waiting on FIFOs.
//! A step could make one of them a FIFO (the engine would wait forever) or a link to a
//! device of the server's machine. So before libgit2 looks at a tree ([`sanitize`]), special
//! files (FIFOs, sockets, devices: never committable) are deleted, and such a rule file that
//! is a link is refused at commit ([`GitError::UnsafeTree`]) and deleted when the tree is
//! reset anyway.

use std::path::{Path, PathBuf};

use git2::build::CheckoutBuilder;
use git2::{Delta, DiffOptions, Oid, Repository, Signature};

use super::Identity;
use super::error::{GitError, IoContext as _, LocalContext as _};

/// The alternates file of a repository whose git directory is `git_dir`.
fn alternates_file(git_dir: &Path) -> PathBuf {
    git_dir.join("objects").join("info").join("alternates")
}

/// How many finished working trees are kept per repository for later runbooks.
const MAX_IDLE_PER_REPO: usize = 2;

/// The engine's git directory of a slot.
pub(crate) fn git_dir(slot: &Path) -> PathBuf {
    slot.join("git")
}

/// The working tree (what agents see) of a slot.
pub(crate) fn tree_dir(slot: &Path) -> PathBuf {
    slot.join("tree")
}

/// Opens a slot's repository: its git directory by explicit path (no discovery, no
/// environment), with the slot's tree as the working directory. Nothing in the tree can
/// redirect it.
pub(crate) fn open_slot(slot: &Path) -> Result<Repository, GitError> {
    let git = git_dir(slot);
    let repo = Repository::open_bare(&git)
        .local(|| format!("opening the git directory {}", git.display()))?;
    let tree = tree_dir(slot);
    repo.set_workdir(&tree, false)
        .local(|| format!("using {} as the working tree", tree.display()))?;
    Ok(repo)
}

/// The line `objects/info/alternates` of a working tree of this mirror holds.
fn alternates_line(mirror: &Repository) -> String {
    format!("{}\n", mirror.path().join("objects").display())
}

/// Sets up the slot `slot` with a working tree on `branch` at the right commit (see
/// [`super::RepoCache::worktree`]) and leaves it clean. A missing slot is taken from the
/// repository's pool of released slots when there is one, so only the files that differ
/// are written; otherwise it is created.
pub(crate) fn prepare(
    mirror_path: &Path,
    slot: &Path,
    pool: &Path,
    full_name: &str,
    branch: &str,
    base: &str,
) -> Result<(), GitError> {
    let started = std::time::Instant::now();
    let mirror = Repository::open_bare(mirror_path)
        .local(|| format!("opening the mirror {}", mirror_path.display()))?;
    let target = start_point(&mirror, full_name, branch, base)?;
    let expected = alternates_line(&mirror);
    drop(mirror);

    let recycled = !slot.exists() && take_from_pool(pool, slot)?;
    let repo = open_or_create(slot, &expected)?;
    if recycled {
        // Released slots forget their setup; a slot released by an older version may not.
        forget_setup(slot)?;
    }
    remove_agent_git(&tree_dir(slot))?;
    sanitize(&tree_dir(slot), Links::Delete)?;
    let commit = repo
        .find_commit(target)
        .local(|| format!("reading commit {target} for {full_name}"))?;
    // What `git reset --hard && git clean -fd` does. Not `Repository::reset`: libgit2's hard
    // reset replaces the caller's checkout strategy with plain `FORCE`, which keeps untracked
    // files. The checkout runs before HEAD moves so that files tracked by the old HEAD and
    // absent from the target are deleted as such. `force` overwrites local modifications;
    // `remove_untracked` deletes files and directories git does not track. Ignored files
    // stay for the same runbook (they never reach a commit and are often expensive build
    // caches) but not in a tree recycled from another runbook.
    let mut checkout = CheckoutBuilder::new();
    checkout
        .force()
        .remove_untracked(true)
        .remove_ignored(recycled);
    repo.checkout_tree(commit.as_object(), Some(&mut checkout))
        .local(|| format!("checking out {target} in {}", slot.display()))?;
    let refname = format!("refs/heads/{branch}");
    repo.reference(&refname, target, true, "runbooks: prepare the working tree")
        .local(|| format!("pointing {refname} at {target}"))?;
    repo.set_head(&refname)
        .local(|| format!("checking out {refname}"))?;
    delete_other_branches(&repo, &refname)?;
    tracing::debug!(
        repo = full_name,
        branch,
        sha = %target,
        recycled,
        elapsed = ?started.elapsed(),
        "working tree prepared"
    );
    Ok(())
}

/// Deletes a `.git` an agent left at the top of the tree (a directory, a file, or a link,
/// which is removed itself, never followed). It was never the engine's, and must not reach
/// the next step or runbook.
fn remove_agent_git(tree: &Path) -> Result<(), GitError> {
    let dot_git = tree.join(".git");
    match std::fs::symlink_metadata(&dot_git) {
        Ok(meta) if meta.is_dir() => {
            std::fs::remove_dir_all(&dot_git).io("removing an agent's .git", &dot_git)
        }
        Ok(_) => std::fs::remove_file(&dot_git).io("removing an agent's .git", &dot_git),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).io("looking for an agent's .git", &dot_git),
    }
}

/// Local branches other than the work branch are left from earlier branches of a stack or
/// from the runbook a recycled tree served; the remote is the truth for all of them.
fn delete_other_branches(repo: &Repository, keep: &str) -> Result<(), GitError> {
    let branches = repo
        .branches(Some(git2::BranchType::Local))
        .local(|| "listing local branches".to_string())?;
    for item in branches {
        let (mut branch, _) = item.local(|| "listing local branches".to_string())?;
        if branch.get().name().ok() != Some(keep) {
            branch
                .delete()
                .local(|| "deleting an old local branch".to_string())?;
        }
    }
    Ok(())
}

/// Moves a released slot of the same repository from `pool` to `slot`. Renames are atomic,
/// so two runbooks starting at once never get the same slot: the loser of a race sees the
/// entry gone and tries the next one.
fn take_from_pool(pool: &Path, slot: &Path) -> Result<bool, GitError> {
    let entries = match std::fs::read_dir(pool) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).io("listing released working trees", pool),
    };
    if let Some(parent) = slot.parent() {
        super::create_private_dir(parent).io("creating the working trees directory", parent)?;
    }
    for entry in entries.flatten() {
        match std::fs::rename(entry.path(), slot) {
            Ok(()) => return Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).io("taking a released working tree", &entry.path()),
        }
    }
    Ok(false)
}

/// See [`super::RepoCache::release`].
pub(crate) fn release(mirror_path: &Path, slot: &Path, pool: &Path) -> Result<(), GitError> {
    if !slot.exists() {
        return Ok(());
    }
    let expected = Repository::open_bare(mirror_path)
        .ok()
        .map(|mirror| alternates_line(&mirror));
    let kept = expected.is_some_and(|expected| {
        if !is_ours(slot, &expected)
            || forget_setup(slot).is_err()
            || remove_agent_git(&tree_dir(slot)).is_err()
            || sanitize(&tree_dir(slot), Links::Delete).is_err()
        {
            return false;
        }
        let Ok(repo) = open_slot(slot) else {
            return false;
        };
        // Cleaned now (untracked and ignored files, local changes) so that idle trees take
        // no more room than a checkout, and taking one later is quick.
        let mut checkout = CheckoutBuilder::new();
        checkout.force().remove_untracked(true).remove_ignored(true);
        repo.checkout_head(Some(&mut checkout)).is_ok()
    });
    let idle = std::fs::read_dir(pool).map_or(0, |entries| entries.count());
    if kept && idle < MAX_IDLE_PER_REPO {
        super::create_private_dir(pool).io("creating the pool of released working trees", pool)?;
        let name = slot.file_name().unwrap_or(slot.as_os_str());
        if std::fs::rename(slot, pool.join(name)).is_ok() {
            return Ok(());
        }
    }
    std::fs::remove_dir_all(slot).io("removing a released working tree", slot)
}

/// The commit the work branch starts at: its head on the remote when it exists there,
/// otherwise the head of `base`.
fn start_point(
    mirror: &Repository,
    full_name: &str,
    branch: &str,
    base: &str,
) -> Result<Oid, GitError> {
    for name in [branch, base] {
        match mirror.refname_to_id(&format!("refs/heads/{name}")) {
            Ok(oid) => return Ok(oid),
            Err(e) if e.code() == git2::ErrorCode::NotFound => continue,
            Err(e) => {
                return Err(GitError::Local {
                    context: format!("reading branch {name} of the mirror of {full_name}"),
                    source: e,
                });
            }
        }
    }
    Err(GitError::BranchNotFound {
        repo: full_name.to_string(),
        branch: base.to_string(),
    })
}

/// Whether `slot` is a slot of this mirror: a bare git directory whose alternates file holds
/// `expected`, and a tree directory (a real one, not a link).
fn is_ours(slot: &Path, expected: &str) -> bool {
    let git = git_dir(slot);
    let tree_is_dir =
        std::fs::symlink_metadata(tree_dir(slot)).is_ok_and(|meta| meta.file_type().is_dir());
    tree_is_dir
        && Repository::open_bare(&git).is_ok()
        && std::fs::read_to_string(alternates_file(&git))
            .ok()
            .as_deref()
            == Some(expected)
}

/// Opens the slot at `slot` when it is one of ours for this mirror, otherwise (missing,
/// damaged, in an older layout, or left from another repository: runbook numbers restart
/// with a new database) creates it afresh.
fn open_or_create(slot: &Path, expected: &str) -> Result<Repository, GitError> {
    if slot.exists() {
        if is_ours(slot, expected) {
            let repo = open_slot(slot)?;
            // A crash in the middle of a git operation leaves lock files (the index, HEAD, a
            // branch's ref) that would make every later operation fail; the git directory
            // is this runbook's alone, and its lease is ours, so they are all stale.
            super::remove_lock_files(repo.path())?;
            return Ok(repo);
        }
        tracing::info!(path = %slot.display(), "replacing a working tree that is not ours");
        std::fs::remove_dir_all(slot).io("removing an old working tree", slot)?;
    }
    if let Some(parent) = slot.parent() {
        super::create_private_dir(parent).io("creating the working trees directory", parent)?;
    }
    super::create_private_dir(slot).io("creating a working tree", slot)?;
    let git = git_dir(slot);
    Repository::init_bare(&git)
        .local(|| format!("creating the git directory {}", git.display()))?;
    // The object database is read when a repository is opened, so the alternates file is
    // written first and the repository opened afterwards.
    let alternates = alternates_file(&git);
    std::fs::write(&alternates, expected)
        .io("linking the working tree to its mirror", &alternates)?;
    let tree = tree_dir(slot);
    super::create_private_dir(&tree).io("creating a working tree", &tree)?;
    open_slot(slot)
}

/// The file whose presence says the repository's setup ran in the slot's tree. In the slot,
/// beside the tree: an agent cannot make it.
fn setup_marker(slot: &Path) -> PathBuf {
    slot.join("setup-done")
}

/// The engine's exclude file: patterns libgit2 reads as ignored, from the engine's git
/// directory (never the tree's).
fn exclude_file(slot: &Path) -> PathBuf {
    git_dir(slot).join("info").join("exclude")
}

/// See [`super::Worktree::is_set_up`].
pub(crate) fn is_set_up(slot: &Path) -> bool {
    std::fs::symlink_metadata(setup_marker(slot)).is_ok()
}

/// See [`super::Worktree::mark_set_up`].
pub(crate) fn mark_set_up(slot: &Path) -> Result<(), GitError> {
    let marker = setup_marker(slot);
    std::fs::write(&marker, b"").io("marking the working tree set up", &marker)
}

/// Forgets that the slot's tree was set up: the marker and the setup's exclusions go.
fn forget_setup(slot: &Path) -> Result<(), GitError> {
    for file in [setup_marker(slot), exclude_file(slot)] {
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).io("forgetting the working tree's setup", &file),
        }
    }
    Ok(())
}

/// What [`keep_setup_out`] did to the tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupLeftovers {
    /// Tracked files the setup changed or deleted, checked out again.
    pub restored: Vec<String>,
    /// Untracked paths the setup made (a directory ends with `/`), now excluded from commits.
    pub excluded: Vec<String>,
    /// Untracked paths whose names an exclude file cannot hold (a line break), deleted.
    pub removed: Vec<String>,
}

/// `path` as an anchored exclude pattern matching only itself.
fn exclude_pattern(path: &str) -> String {
    let mut pattern = String::with_capacity(path.len() + 2);
    pattern.push('/');
    for c in path.chars() {
        if matches!(c, '\\' | '*' | '?' | '[' | ']' | '!' | '#' | ' ') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// After the repository's setup ran in the slot's tree: tracked files it changed are checked
/// out again (a step's commit must not carry them), and the untracked files and directories
/// it made that git does not ignore are added to the engine's exclude file, so the steps see
/// them and no commit carries them (nor does the next step's reset delete them). Ignored
/// files need nothing: they stay for the runbook and never reach a commit.
pub(crate) fn keep_setup_out(slot: &Path) -> Result<SetupLeftovers, GitError> {
    let tree = tree_dir(slot);
    remove_agent_git(&tree)?;
    sanitize(&tree, Links::Delete)?;
    let repo = open_slot(slot)?;
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let mut leftovers = SetupLeftovers::default();
    {
        let statuses = repo
            .statuses(Some(&mut options))
            .local(|| format!("reading what the setup changed in {}", tree.display()))?;
        for entry in statuses.iter() {
            let path = String::from_utf8_lossy(entry.path_bytes()).into_owned();
            let status = entry.status();
            if is_git_path(Path::new(&path)) {
                // Never committed anyway (see `stage_all`).
                continue;
            }
            if status.contains(git2::Status::WT_NEW) {
                if path.contains(['\n', '\r']) {
                    leftovers.removed.push(path);
                } else {
                    leftovers.excluded.push(path);
                }
            } else if status.intersects(
                git2::Status::WT_MODIFIED
                    | git2::Status::WT_DELETED
                    | git2::Status::WT_TYPECHANGE
                    | git2::Status::WT_RENAMED,
            ) {
                leftovers.restored.push(path);
            }
        }
    }
    for path in &leftovers.removed {
        let full = tree.join(path.trim_end_matches('/'));
        let removed = match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&full),
            Ok(_) => std::fs::remove_file(&full),
            Err(e) => Err(e),
        };
        removed.io("removing a file the setup made", &full)?;
    }
    if !leftovers.restored.is_empty() {
        let mut checkout = CheckoutBuilder::new();
        checkout.force();
        repo.checkout_head(Some(&mut checkout))
            .local(|| format!("restoring files the setup changed in {}", tree.display()))?;
    }
    if !leftovers.excluded.is_empty() {
        let file = exclude_file(slot);
        let mut text = std::fs::read_to_string(&file).unwrap_or_default();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for path in &leftovers.excluded {
            let pattern = exclude_pattern(path);
            if !text.lines().any(|line| line == pattern) {
                text.push_str(&pattern);
                text.push('\n');
            }
        }
        if let Some(info) = file.parent() {
            std::fs::create_dir_all(info).io("creating the git directory's info", info)?;
        }
        std::fs::write(&file, text).io("excluding the setup's files from commits", &file)?;
    }
    Ok(leftovers)
}

/// See [`super::Worktree::commit_all`].
pub(crate) fn commit_all(
    slot: &Path,
    branch: &str,
    message: &str,
    who: &Identity,
) -> Result<Option<String>, GitError> {
    let started = std::time::Instant::now();
    let repo = open_slot(slot)?;
    let path = tree_dir(slot);
    let path = path.as_path();
    let refname = format!("refs/heads/{branch}");
    let head = repo
        .head()
        .local(|| format!("reading HEAD in {}", path.display()))?;
    if head.name().ok() != Some(refname.as_str()) {
        return Err(GitError::NotOnBranch {
            path: path.to_path_buf(),
            branch: branch.to_string(),
        });
    }
    let parent = head
        .peel_to_commit()
        .local(|| format!("reading {refname} in {}", path.display()))?;
    sanitize(path, Links::Refuse)?;
    let mut index = repo.index().local(|| "reading the index".to_string())?;
    stage_all(&repo, &mut index, path)?;
    // The tree is written before the index: writing the tree fills the index's tree cache,
    // and saving the index afterwards keeps that cache, so the next commit only rehashes the
    // directories that changed instead of all of them.
    let tree_id = index
        .write_tree()
        .local(|| "writing the tree".to_string())?;
    index.write().local(|| "writing the index".to_string())?;
    if parent.tree_id() == tree_id {
        tracing::debug!(branch, elapsed = ?started.elapsed(), "nothing to commit");
        return Ok(None);
    }
    let tree = repo
        .find_tree(tree_id)
        .local(|| format!("reading tree {tree_id}"))?;
    let signature = Signature::now(&who.name, &who.email).local(|| {
        format!(
            "using `{} <{}>` as the commit identity",
            who.name, who.email
        )
    })?;
    let oid = repo
        .commit(
            Some(&refname),
            &signature,
            &signature,
            message,
            &tree,
            &[&parent],
        )
        .local(|| format!("committing in {}", path.display()))?;
    tracing::debug!(branch, sha = %oid, elapsed = ?started.elapsed(), "committed");
    Ok(Some(oid.to_string()))
}

/// `git add -A` in one pass over the working tree. libgit2's `Index::add_all` skips deleted
/// files and needs `Index::update_all` after it, which walks the tree a second time; a
/// single index-to-workdir diff finds additions, modifications and deletions at once
/// (ignored files are not reported; tracked files stay tracked even when ignored).
fn stage_all(repo: &Repository, index: &mut git2::Index, path: &Path) -> Result<(), GitError> {
    let mut options = DiffOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        // Without this, a file turned into a symbolic link (or back) is reported as a
        // deletion plus an addition of the same path, in no guaranteed order.
        .include_typechange(true)
        // Stat information refreshed while comparing (racily clean entries) is kept in the
        // index, so the contents are not hashed again next time.
        .update_index(true);
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    {
        let diff = repo
            .diff_index_to_workdir(Some(index), Some(&mut options))
            .local(|| format!("comparing the index with {}", path.display()))?;
        for delta in diff.deltas() {
            match delta.status() {
                Delta::Deleted => removed.extend(delta.old_file().path().map(Path::to_path_buf)),
                Delta::Added
                | Delta::Untracked
                | Delta::Modified
                | Delta::Typechange
                | Delta::Renamed
                | Delta::Copied
                | Delta::Conflicted => {
                    added.extend(delta.new_file().path().map(Path::to_path_buf));
                }
                Delta::Unmodified | Delta::Ignored | Delta::Unreadable => {}
            }
        }
    }
    // Deletions first: a file replaced by a directory (or the reverse) shows as a deletion
    // and additions, and the additions must win.
    for file in &removed {
        index
            .remove_path(file)
            .local(|| format!("staging the deletion of {}", file.display()))?;
    }
    for file in &added {
        if is_git_path(file) {
            // An agent's own repository at the top or deeper: scratch, never committed (git
            // itself refuses such paths in an index).
            tracing::debug!(path = %file.display(), "not committing a .git entry");
            continue;
        }
        // `lstat`: a link to a directory is a link (committed as such), not a directory.
        let is_dir = std::fs::symlink_metadata(path.join(file)).is_ok_and(|m| m.is_dir());
        if is_dir {
            // A repository nested in the tree (an agent ran `git clone` or `git init`):
            // git would record it as a broken submodule; leave it out.
            tracing::warn!(path = %file.display(), "not committing a nested git repository");
            continue;
        }
        index
            .add_path(file)
            .local(|| format!("staging {}", file.display()))?;
    }
    Ok(())
}

/// Whether a path of the tree has a `.git` component (in any case: some file systems fold
/// it).
fn is_git_path(path: &Path) -> bool {
    path.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|c| c.eq_ignore_ascii_case(".git"))
    })
}

/// Files libgit2 opens from the tree while it stages or checks out (following links, and
/// waiting on a FIFO until someone writes to it).
const RULE_FILES: [&str; 3] = [".gitignore", ".gitattributes", ".gitmodules"];

/// What [`sanitize`] does with a rule file that is a symbolic link.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Links {
    /// Fail: the step's commit would carry it, and every later operation would follow it.
    Refuse,
    /// Delete it: the tree is being reset to a commit anyway.
    Delete,
}

/// Makes the tree safe for libgit2 to read (see the module header): deletes special files
/// (FIFOs, sockets, devices) anywhere in it, and refuses or deletes `.gitignore`,
/// `.gitattributes` and `.gitmodules` that are symbolic links. Walks with `lstat` only.
fn sanitize(tree: &Path, links: Links) -> Result<(), GitError> {
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).io("reading the working tree", &dir),
        };
        for entry in entries {
            let entry = entry.io("reading the working tree", &dir)?;
            let path = entry.path();
            let kind = entry.file_type().io("reading the working tree", &path)?;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                let name = entry.file_name();
                let is_rules = name
                    .to_str()
                    .is_some_and(|n| RULE_FILES.iter().any(|r| r.eq_ignore_ascii_case(n)));
                if !is_rules {
                    continue;
                }
                match links {
                    Links::Refuse => {
                        return Err(GitError::UnsafeTree {
                            path: path.strip_prefix(tree).unwrap_or(&path).to_path_buf(),
                            reason: "is a symbolic link: git reads its rules from the working \
                                     tree, and the engine does not follow links out of it; \
                                     make it a regular file",
                        });
                    }
                    Links::Delete => {
                        std::fs::remove_file(&path).io("removing a linked rule file", &path)?
                    }
                }
            } else if !kind.is_file() {
                // A FIFO, a socket or a device: git never commits one, and opening one could
                // block the engine or act on the machine.
                tracing::debug!(path = %path.display(), "removing a special file from the tree");
                std::fs::remove_file(&path).io("removing a special file", &path)?;
            }
        }
    }
    Ok(())
}
