//! Errors of the git layer, worded for the person who has to act on them.

use std::path::PathBuf;

/// What can go wrong while caching repositories, preparing working trees, committing or
/// pushing. Messages never contain the installation token: libgit2 only ever sees it inside
/// the credentials callback, and no URL we hand it carries credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// A repository name, branch name or clone URL the caller gave cannot be used.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: &'static str,
    },

    /// The git server refused the installation token (twice: once, then after one retry).
    #[error(
        "the git server refused the installation token for {repo} (git {operation}): check \
         that the app is installed on the repository with contents permission and that the \
         token has not expired or been revoked"
    )]
    Auth {
        repo: String,
        operation: &'static str,
    },

    /// libgit2 asked for credentials for another URL than the repository's clone URL (a
    /// rewritten URL or a redirect): none were given.
    #[error(
        "git {operation} of {repo} was refused credentials: it was sent to another URL than the \
         repository's clone URL (a rewritten URL or a redirect), and the installation token \
         goes only to the clone URL GitHub gave"
    )]
    ForeignUrl {
        repo: String,
        operation: &'static str,
    },

    /// A step left something in the tree the engine will not let git read.
    #[error("the working tree cannot be committed: `{}` {reason}", path.display())]
    UnsafeTree { path: PathBuf, reason: &'static str },

    /// Neither the work branch nor its base exists on the remote.
    #[error(
        "branch `{branch}` does not exist in {repo}: it may have been deleted or renamed on \
         GitHub"
    )]
    BranchNotFound { repo: String, branch: String },

    /// The server refused to update the branch (typically not a fast-forward: someone else
    /// pushed to it, or a protection rule forbids the update).
    #[error(
        "pushing `{branch}` to {repo} was rejected: {reason} (if someone else pushed to the \
         branch, prepare the working tree again to continue from the remote head)"
    )]
    Rejected {
        repo: String,
        branch: String,
        reason: String,
    },

    /// The working tree's `HEAD` is no longer the work branch (an agent switched branches or
    /// detached `HEAD`); committing there would lose the work.
    #[error(
        "the working tree {} is no longer on branch `{branch}`; prepare it again",
        path.display()
    )]
    NotOnBranch { path: PathBuf, branch: String },

    /// A fetch or push failed for another reason (network, server error, permissions).
    #[error("git {operation} of {repo} failed: {source}")]
    Remote {
        repo: String,
        operation: &'static str,
        #[source]
        source: git2::Error,
    },

    /// A local git operation failed.
    #[error("{context}: {source}")]
    Local {
        context: String,
        #[source]
        source: git2::Error,
    },

    /// A file-system operation failed.
    #[error("{context} ({}): {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The blocking task running the git operation panicked or was cancelled.
    #[error("the git task did not finish: {0}")]
    Task(String),
}

impl GitError {
    /// Whether retrying with a fresh installation token may help.
    pub fn is_auth(&self) -> bool {
        matches!(self, GitError::Auth { .. })
    }
}

/// Shorthand for wrapping local libgit2 errors with what we were doing.
pub(crate) trait LocalContext<T> {
    fn local(self, context: impl FnOnce() -> String) -> Result<T, GitError>;
}

impl<T> LocalContext<T> for Result<T, git2::Error> {
    fn local(self, context: impl FnOnce() -> String) -> Result<T, GitError> {
        self.map_err(|source| GitError::Local {
            context: context(),
            source,
        })
    }
}

/// Shorthand for wrapping I/O errors with what we were doing and where.
pub(crate) trait IoContext<T> {
    fn io(self, context: &'static str, path: &std::path::Path) -> Result<T, GitError>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, context: &'static str, path: &std::path::Path) -> Result<T, GitError> {
        self.map_err(|source| GitError::Io {
            context,
            path: path.to_path_buf(),
            source,
        })
    }
}
