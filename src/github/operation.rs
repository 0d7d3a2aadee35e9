//! Every GitHub operation the app performs, and what each needs of an installation token:
//! the one table the client mints tokens from.
//!
//! A token good for every repository of an installation with every permission of the app
//! leaks far if stolen. So the client never asks for one: each token names the one repository
//! a call is about (`repositories`) and only the permissions its operation needs
//! (`permissions`), and is cached per (installation, repository, permission set).
//! [`Operation::needs`] is a `match` without a wildcard: an operation without an entry does
//! not compile, and nothing falls back to a broad token.
//!
//! The entries follow GitHub's "Permissions required for GitHub Apps". One subtlety: GitHub's
//! issue endpoints (comments, reactions, labels) serve issues and pull requests alike, but for
//! a token with only `issues` they are restricted to issues, and with only `pull_requests` to
//! pull requests. Runbooks comments on both kinds of thread, and a call does not know which
//! kind its number is, so those operations ask for both at the same level.

/// A permission of a GitHub App, by GitHub's name (only those the app uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AppPermission {
    Contents,
    Issues,
    Metadata,
    PullRequests,
}

impl AppPermission {
    /// GitHub's name, as in the token request's `permissions`.
    pub const fn name(self) -> &'static str {
        match self {
            AppPermission::Contents => "contents",
            AppPermission::Issues => "issues",
            AppPermission::Metadata => "metadata",
            AppPermission::PullRequests => "pull_requests",
        }
    }
}

/// How much of a permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// GitHub's name: `read` or `write`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write => "write",
        }
    }
}

/// The permissions a token is minted with, each permission once.
pub type Permissions = &'static [(AppPermission, Access)];

/// What an operation must be called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// The app's own JWT (GitHub takes it on `/app` endpoints only).
    App,
    /// An installation token for the repository the call is about, with these permissions.
    Token(Permissions),
}

const METADATA_READ: Permissions = &[(AppPermission::Metadata, Access::Read)];
const CONTENTS_READ: Permissions = &[(AppPermission::Contents, Access::Read)];
const CONTENTS_WRITE: Permissions = &[(AppPermission::Contents, Access::Write)];
const PULLS_READ: Permissions = &[(AppPermission::PullRequests, Access::Read)];
const PULLS_WRITE: Permissions = &[(AppPermission::PullRequests, Access::Write)];
/// Issue-thread endpoints, on an issue or a pull request (see the module header).
const THREAD_READ: Permissions = &[
    (AppPermission::Issues, Access::Read),
    (AppPermission::PullRequests, Access::Read),
];
const THREAD_WRITE: Permissions = &[
    (AppPermission::Issues, Access::Write),
    (AppPermission::PullRequests, Access::Write),
];

/// What fetching from and pushing to a repository over git's smart HTTP needs: one token
/// serves both, and pushing needs `contents: write`.
pub const GIT: Permissions = CONTENTS_WRITE;

/// A GitHub operation the app performs, named after GitHub's operation id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    AppsGetAuthenticated,
    AppsGetRepoInstallation,
    AppsCreateInstallationAccessToken,
    ReposGet,
    ReposGetCollaboratorPermissionLevel,
    ReposGetContent,
    UsersGetByUsername,
    GitDeleteRef,
    PullsList,
    PullsGet,
    PullsCreate,
    PullsUpdate,
    IssuesGet,
    IssuesListComments,
    IssuesCreateComment,
    IssuesUpdateComment,
    IssuesAddLabels,
    ReactionsCreateForIssueComment,
    GraphqlMarkPullRequestReadyForReview,
    GraphqlConvertPullRequestToDraft,
}

impl Operation {
    /// Every operation, for tests that go over the whole table.
    pub const ALL: [Operation; 20] = [
        Operation::AppsGetAuthenticated,
        Operation::AppsGetRepoInstallation,
        Operation::AppsCreateInstallationAccessToken,
        Operation::ReposGet,
        Operation::ReposGetCollaboratorPermissionLevel,
        Operation::ReposGetContent,
        Operation::UsersGetByUsername,
        Operation::GitDeleteRef,
        Operation::PullsList,
        Operation::PullsGet,
        Operation::PullsCreate,
        Operation::PullsUpdate,
        Operation::IssuesGet,
        Operation::IssuesListComments,
        Operation::IssuesCreateComment,
        Operation::IssuesUpdateComment,
        Operation::IssuesAddLabels,
        Operation::ReactionsCreateForIssueComment,
        Operation::GraphqlMarkPullRequestReadyForReview,
        Operation::GraphqlConvertPullRequestToDraft,
    ];

    /// GitHub's operation id (`pulls/create`); GraphQL mutations as `graphql/<mutation>`.
    pub const fn id(self) -> &'static str {
        match self {
            Operation::AppsGetAuthenticated => "apps/get-authenticated",
            Operation::AppsGetRepoInstallation => "apps/get-repo-installation",
            Operation::AppsCreateInstallationAccessToken => "apps/create-installation-access-token",
            Operation::ReposGet => "repos/get",
            Operation::ReposGetCollaboratorPermissionLevel => {
                "repos/get-collaborator-permission-level"
            }
            Operation::ReposGetContent => "repos/get-content",
            Operation::UsersGetByUsername => "users/get-by-username",
            Operation::GitDeleteRef => "git/delete-ref",
            Operation::PullsList => "pulls/list",
            Operation::PullsGet => "pulls/get",
            Operation::PullsCreate => "pulls/create",
            Operation::PullsUpdate => "pulls/update",
            Operation::IssuesGet => "issues/get",
            Operation::IssuesListComments => "issues/list-comments",
            Operation::IssuesCreateComment => "issues/create-comment",
            Operation::IssuesUpdateComment => "issues/update-comment",
            Operation::IssuesAddLabels => "issues/add-labels",
            Operation::ReactionsCreateForIssueComment => "reactions/create-for-issue-comment",
            Operation::GraphqlMarkPullRequestReadyForReview => {
                "graphql/markPullRequestReadyForReview"
            }
            Operation::GraphqlConvertPullRequestToDraft => "graphql/convertPullRequestToDraft",
        }
    }

    /// What the operation must be called with: the table.
    pub const fn needs(self) -> Needs {
        match self {
            Operation::AppsGetAuthenticated
            | Operation::AppsGetRepoInstallation
            | Operation::AppsCreateInstallationAccessToken => Needs::App,
            // `GET /users/{login}` is about no repository; metadata is the least any token has.
            Operation::ReposGet
            | Operation::ReposGetCollaboratorPermissionLevel
            | Operation::UsersGetByUsername => Needs::Token(METADATA_READ),
            Operation::ReposGetContent => Needs::Token(CONTENTS_READ),
            Operation::GitDeleteRef => Needs::Token(CONTENTS_WRITE),
            Operation::PullsList | Operation::PullsGet => Needs::Token(PULLS_READ),
            Operation::PullsCreate
            | Operation::PullsUpdate
            | Operation::GraphqlMarkPullRequestReadyForReview
            | Operation::GraphqlConvertPullRequestToDraft => Needs::Token(PULLS_WRITE),
            Operation::IssuesGet | Operation::IssuesListComments => Needs::Token(THREAD_READ),
            Operation::IssuesCreateComment
            | Operation::IssuesUpdateComment
            | Operation::IssuesAddLabels
            | Operation::ReactionsCreateForIssueComment => Needs::Token(THREAD_WRITE),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    /// `default_permissions` of `app-manifest.yml`: what every installation grants.
    fn manifest_permissions() -> BTreeMap<String, String> {
        let manifest: serde_json::Value =
            serde_norway::from_str(include_str!("../../app-manifest.yml")).unwrap();
        serde_json::from_value(manifest["default_permissions"].clone()).unwrap()
    }

    fn granted(permissions: Permissions) -> bool {
        let manifest = manifest_permissions();
        permissions.iter().all(|(permission, access)| {
            match manifest.get(permission.name()).map(String::as_str) {
                Some("write") => true,
                Some("read") => *access == Access::Read,
                _ => false,
            }
        })
    }

    #[test]
    fn every_operation_is_listed_once_with_a_distinct_id() {
        let operations: BTreeSet<Operation> = Operation::ALL.into_iter().collect();
        assert_eq!(operations.len(), Operation::ALL.len());
        let ids: BTreeSet<&str> = Operation::ALL.iter().map(|o| o.id()).collect();
        assert_eq!(ids.len(), Operation::ALL.len());
    }

    #[test]
    fn every_token_asks_only_for_what_the_manifest_grants_each_permission_once() {
        let mut sets = vec![GIT];
        sets.extend(Operation::ALL.iter().filter_map(|o| match o.needs() {
            Needs::Token(permissions) => Some(permissions),
            Needs::App => None,
        }));
        for permissions in sets {
            assert!(!permissions.is_empty());
            assert!(
                granted(permissions),
                "{permissions:?} is more than app-manifest.yml grants: GitHub would refuse the token"
            );
            let names: BTreeSet<AppPermission> = permissions.iter().map(|(p, _)| *p).collect();
            assert_eq!(names.len(), permissions.len(), "{permissions:?}");
        }
    }

    #[test]
    fn only_app_endpoints_take_the_jwt() {
        for operation in Operation::ALL {
            let app_endpoint = matches!(
                operation,
                Operation::AppsGetAuthenticated
                    | Operation::AppsGetRepoInstallation
                    | Operation::AppsCreateInstallationAccessToken
            );
            assert_eq!(
                operation.needs() == Needs::App,
                app_endpoint,
                "{operation:?}"
            );
        }
    }

    #[test]
    fn writes_never_ride_on_read_tokens() {
        // Operations that change something ask for write; reads ask for read only.
        let writes = [
            Operation::GitDeleteRef,
            Operation::PullsCreate,
            Operation::PullsUpdate,
            Operation::IssuesCreateComment,
            Operation::IssuesUpdateComment,
            Operation::IssuesAddLabels,
            Operation::ReactionsCreateForIssueComment,
            Operation::GraphqlMarkPullRequestReadyForReview,
            Operation::GraphqlConvertPullRequestToDraft,
        ];
        for operation in Operation::ALL {
            let Needs::Token(permissions) = operation.needs() else {
                continue;
            };
            let level = if writes.contains(&operation) {
                Access::Write
            } else {
                Access::Read
            };
            assert!(
                permissions.iter().all(|(_, access)| *access == level),
                "{operation:?}: {permissions:?}"
            );
        }
    }
}
