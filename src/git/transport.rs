//! Talking to the git server: fetching into a mirror and pushing a branch, with the
//! installation token supplied only through libgit2's credentials callback.
//!
//! The callback hands the token out only when libgit2 asks for the very clone URL GitHub
//! gave for the repository (scheme, host, port and path compared): a URL rewritten by
//! configuration (`url.*.pushInsteadOf`) or reached through a redirect gets nothing, and the
//! operation fails with [`GitError::ForeignUrl`]. Redirects are not followed at all.

use std::cell::Cell;
use std::rc::Rc;

use git2::{
    AutotagOption, Cred, CredentialType, FetchOptions, FetchPrune, PushOptions, RemoteCallbacks,
    RemoteRedirect, Repository,
};
use secrecy::{ExposeSecret as _, SecretString};

use super::error::GitError;

/// The user name GitHub expects with an installation token over HTTPS.
const TOKEN_USER: &str = "x-access-token";

/// How many times the credentials callback hands out the token. libgit2 calls the callback
/// again every time the server answers 401, without limit: a wrong token would loop forever.
/// The first call answers the server's challenge; the second is the one retry (a proxy or a
/// server may drop the first attempt); a third call means the token is refused.
const MAX_CREDENTIAL_CALLS: u32 = 2;

/// An owned copy of what is needed to reach the remote, movable into a blocking task.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub full_name: String,
    pub url: String,
    pub token: SecretString,
}

/// What went wrong in the credentials callback, for the caller to tell apart (libgit2 only
/// reports the callback's error text).
#[derive(Default)]
struct Refusals {
    /// The budget of attempts ran out: the token was refused.
    exhausted: Cell<bool>,
    /// libgit2 asked for credentials for another URL than the clone URL.
    foreign: Cell<bool>,
}

/// Whether the credentials callback may answer for `asked`: it must be the clone URL itself.
/// Compared as text after lower-casing the scheme and host (which are case-insensitive) and
/// dropping one trailing slash; nothing else is normalised, so a different port, path or
/// scheme is a different URL.
pub(crate) fn same_remote(clone_url: &str, asked: &str) -> bool {
    fn canonical(url: &str) -> Option<(String, String)> {
        let (scheme, rest) = url.split_once("://")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        Some((
            format!(
                "{}://{}",
                scheme.to_ascii_lowercase(),
                authority.to_ascii_lowercase()
            ),
            path.strip_suffix('/').unwrap_or(path).to_string(),
        ))
    }
    matches!((canonical(clone_url), canonical(asked)), (Some(a), Some(b)) if a == b)
}

/// Remote callbacks that answer credential requests with the token, counting the calls.
fn callbacks<'a>(endpoint: &'a Endpoint, refusals: Rc<Refusals>) -> RemoteCallbacks<'a> {
    let calls = Cell::new(0u32);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |url, _user_from_url, allowed| {
        if !same_remote(&endpoint.url, url) {
            refusals.foreign.set(true);
            return Err(git2::Error::from_str(
                "refusing to send credentials to a URL other than the repository's clone URL",
            ));
        }
        if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            return Err(git2::Error::from_str(
                "the git server asked for a credential type other than user and password",
            ));
        }
        let n = calls.get() + 1;
        calls.set(n);
        if n > MAX_CREDENTIAL_CALLS {
            refusals.exhausted.set(true);
            return Err(git2::Error::from_str("the installation token was refused"));
        }
        Cred::userpass_plaintext(TOKEN_USER, endpoint.token.expose_secret())
    });
    callbacks
}

/// Maps a libgit2 error from a network operation to our error, recognising a refused token.
fn remote_error(
    endpoint: &Endpoint,
    operation: &'static str,
    refusals: &Refusals,
    source: git2::Error,
) -> GitError {
    if refusals.foreign.get() {
        GitError::ForeignUrl {
            repo: endpoint.full_name.clone(),
            operation,
        }
    } else if refusals.exhausted.get()
        || source.class() == git2::ErrorClass::Http && source.code() == git2::ErrorCode::Auth
    {
        GitError::Auth {
            repo: endpoint.full_name.clone(),
            operation,
        }
    } else {
        GitError::Remote {
            repo: endpoint.full_name.clone(),
            operation,
            source,
        }
    }
}

/// The refspec that mirrors every branch of the remote onto the same name, forced: the mirror
/// follows the remote even through force-pushes.
const MIRROR_REFSPEC: &str = "+refs/heads/*:refs/heads/*";

/// Fetches every branch of the remote into `mirror` (a bare repository), removing branches
/// deleted on the remote. Uses an anonymous remote: nothing about the server is written to
/// the mirror's configuration, and no `FETCH_HEAD` is written either.
pub(crate) fn fetch_mirror(mirror: &Repository, endpoint: &Endpoint) -> Result<(), GitError> {
    let refusals = Rc::new(Refusals::default());
    let result = (|| {
        let mut remote = mirror.remote_anonymous(&endpoint.url)?;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks(endpoint, refusals.clone()))
            .follow_redirects(RemoteRedirect::None)
            .prune(FetchPrune::On)
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        remote.fetch(
            &[MIRROR_REFSPEC],
            Some(&mut options),
            Some("runbooks: fetch"),
        )
    })();
    result.map_err(|e| remote_error(endpoint, "fetch", &refusals, e))
}

/// Pushes `refs/heads/<branch>` of `repo` to the same branch on the remote. libgit2 reports a
/// ref the server refused through the `push_update_reference` callback while `push` itself
/// returns success, so the statuses are collected and turned into [`GitError::Rejected`].
pub(crate) fn push_branch(
    repo: &Repository,
    endpoint: &Endpoint,
    branch: &str,
    force: bool,
) -> Result<(), GitError> {
    let refusals = Rc::new(Refusals::default());
    let rejection: Rc<Cell<Option<String>>> = Rc::new(Cell::new(None));
    let result = (|| {
        let mut remote = repo.remote_anonymous(&endpoint.url)?;
        let mut callbacks = callbacks(endpoint, refusals.clone());
        let rejected = rejection.clone();
        callbacks.push_update_reference(move |_refname, status| {
            if let Some(status) = status {
                rejected.set(Some(status.to_string()));
            }
            Ok(())
        });
        let mut options = PushOptions::new();
        options
            .remote_callbacks(callbacks)
            .follow_redirects(RemoteRedirect::None);
        let spec = format!(
            "{}refs/heads/{branch}:refs/heads/{branch}",
            if force { "+" } else { "" }
        );
        remote.push(&[spec.as_str()], Some(&mut options))
    })();
    match result {
        Err(e) if is_non_fast_forward(&e) => Err(GitError::Rejected {
            repo: endpoint.full_name.clone(),
            branch: branch.to_string(),
            reason: e.message().to_string(),
        }),
        Err(e) => Err(remote_error(endpoint, "push", &refusals, e)),
        Ok(()) => match rejection.take() {
            Some(reason) => Err(GitError::Rejected {
                repo: endpoint.full_name.clone(),
                branch: branch.to_string(),
                reason,
            }),
            None => Ok(()),
        },
    }
}

/// libgit2 checks fast-forwards itself when it has the remote's commit locally and fails
/// with `NotFastForward` before sending anything.
fn is_non_fast_forward(e: &git2::Error) -> bool {
    e.code() == git2::ErrorCode::NotFastForward
}

#[cfg(test)]
mod tests {
    use super::same_remote;

    #[test]
    fn credentials_go_only_to_the_clone_url() {
        let clone = "https://github.com/acme/app.git";
        assert!(same_remote(clone, clone));
        assert!(same_remote(clone, "HTTPS://GitHub.com/acme/app.git/"));
        for other in [
            "http://github.com/acme/app.git",
            "https://github.com:8443/acme/app.git",
            "https://github.com.evil.example/acme/app.git",
            "https://evil.example/acme/app.git",
            "https://github.com/acme/other.git",
            "https://github.com/acme/app.git/../other.git",
            "https://github.com/Acme/app.git",
            "https://x@github.com/acme/app.git",
            "http://127.0.0.1:9999/acme/app.git",
            "github.com/acme/app.git",
            "",
        ] {
            assert!(!same_remote(clone, other), "{other}");
        }
        let local = "http://127.0.0.1:8080/git/acme/app.git";
        assert!(same_remote(local, local));
        assert!(!same_remote(
            local,
            "http://127.0.0.1:8081/git/acme/app.git"
        ));
        assert!(!same_remote(
            local,
            "http://localhost:8080/git/acme/app.git"
        ));
    }
}
