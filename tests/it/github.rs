//! The GitHub App layer against the GitHub stand-in: app JWT, installation tokens (minted for
//! one repository with only the permissions an operation needs, reused, renewed, replaced
//! after a 401 mid-work; a git token that can do nothing but git on its own repository),
//! retries on 5xx, rate limits, repository resolution (422 when not installed), installation
//! webhooks, and the Enterprise Server URL layout.

use crate::support;
use crate::support::rn;

use std::time::{Duration, Instant};

use runbooks::git::{Identity, Remote, RepoCache};
use runbooks::github::issues::Permission;
use runbooks::github::{GitHubApp, GitHubError, RepoInfo, Resolution, RetryPolicy};
use runbooks_standin::{Fault, Options, StandIn};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use support::{Backend, Refused, TestServer, expect_error, json, minimal};

/// Fast retries: the behaviour is the same, the tests shorter.
fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        backoff: Duration::from_millis(5),
        max_wait: Duration::from_secs(5),
    }
}

async fn github_with_repo() -> (StandIn, u64) {
    let github = StandIn::start().await.unwrap();
    github
        .create_repo(
            "acme-corp",
            "backend",
            "trunk",
            &[("README.md", "# backend\n")],
        )
        .await
        .unwrap();
    github
        .create_repo(
            "acme-corp",
            "website",
            "main",
            &[("index.html", "<h1>hi</h1>\n")],
        )
        .await
        .unwrap();
    let installation = github.install("acme-corp", &["backend"]);
    (github, installation)
}

fn app(github: &StandIn) -> GitHubApp {
    GitHubApp::new(
        &github.api_url(),
        github.app_id(),
        &SecretString::from(github.private_key_pem()),
        quick(),
    )
    .unwrap()
}

fn count(github: &StandIn, operation: &str) -> usize {
    github.requests_for(operation).len()
}

const TOKENS: &str = "apps/create-installation-access-token";

/// The bodies of the token requests the stand-in answered, oldest first.
fn token_requests(github: &StandIn) -> Vec<Value> {
    github
        .requests_for(TOKENS)
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, 201, "{:?}", r.body);
            r.body.expect("a token request names what it wants")
        })
        .collect()
}

#[tokio::test]
async fn repositories_resolve_through_the_installation() {
    let (github, installation) = github_with_repo().await;
    let app = app(&github);
    let Resolution::Found(repo) = app.resolve("acme-corp", "backend").await.unwrap() else {
        panic!("backend is installed");
    };
    assert_eq!(repo.installation_id, installation);
    assert_eq!(repo.full_name.as_str(), "acme-corp/backend");
    assert_eq!(repo.default_branch, "trunk");
    assert_eq!(repo.clone_url, github.clone_url("acme-corp", "backend"));
    // Names compare without case, and the answer is cached.
    assert!(matches!(
        app.resolve("ACME-Corp", "Backend").await.unwrap(),
        Resolution::Found(_)
    ));
    assert_eq!(count(&github, "apps/get-repo-installation"), 1);
    assert_eq!(count(&github, "repos/get"), 1);

    // Not installed on the account, installed without this repository, or no such repository.
    assert_eq!(
        app.resolve("globex", "backend").await.unwrap(),
        Resolution::NotInstalled
    );
    assert_eq!(
        app.resolve("acme-corp", "website").await.unwrap(),
        Resolution::NotInstalled
    );
    assert_eq!(
        app.resolve("acme-corp", "nothing").await.unwrap(),
        Resolution::NotInstalled
    );

    let identity = app.identity().await.unwrap();
    assert_eq!(identity.slug, github.app_slug());
    let counts = app.client.call_counts();
    assert_eq!(counts["apps/get-authenticated"], 1);
    assert_eq!(counts["apps/create-installation-access-token"], 1);
}

#[tokio::test]
async fn installation_tokens_are_reused_renewed_and_replaced_after_a_401() {
    let (github, _) = github_with_repo().await;
    let app = app(&github);
    let repo = app.installed_repo("acme-corp", "backend").await.unwrap();
    github.clear_requests();
    let first = app.git_token(&repo).await.unwrap();
    let again = app.git_token(&repo).await.unwrap();
    assert_eq!(
        first.expose_secret(),
        again.expose_secret(),
        "reused while fresh"
    );
    assert_eq!(count(&github, TOKENS), 1);

    // A token about to expire (GitHub's say) is renewed before use.
    github.set_token_lifetime(Duration::from_secs(60));
    let app = self::app(&github);
    let short = app.git_token(&repo).await.unwrap();
    let renewed = app.git_token(&repo).await.unwrap();
    assert_ne!(short.expose_secret(), renewed.expose_secret());
    assert_eq!(count(&github, TOKENS), 3);

    // GitHub stops honouring the token mid-work: the call is answered 401, the token is
    // dropped, a new one (as narrow) exchanged and the call made again — it succeeds.
    github.set_token_lifetime(Duration::from_secs(3600));
    let readme = app.file(&repo, "README.md", "trunk").await.unwrap();
    assert_eq!(readme.as_deref(), Some("# backend\n"));
    github.expire_tokens();
    github.clear_requests();
    let readme = app.file(&repo, "README.md", "trunk").await.unwrap();
    assert_eq!(readme.as_deref(), Some("# backend\n"));
    let statuses: Vec<(String, u16)> = github
        .requests()
        .into_iter()
        .map(|r| (r.operation, r.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("repos/get-content".to_string(), 401),
            (TOKENS.to_string(), 201),
            ("repos/get-content".to_string(), 200),
        ]
    );
    assert_eq!(
        token_requests(&github),
        [json!({"repositories": ["backend"], "permissions": {"contents": "read"}})]
    );
}

/// Runs every GitHub call the app makes, on an issue's thread and a pull request's, as a
/// runbook would.
async fn every_call(app: &GitHubApp, github: &StandIn, repo: &RepoInfo) {
    let issue = github
        .add_issue("acme-corp", "backend", "Upgrade React", "", "alice")
        .unwrap();
    let asked = github
        .add_comment("acme-corp", "backend", issue, "alice", "/runbook go")
        .unwrap();
    github.set_permission("acme-corp", "backend", "alice", "write");
    assert_eq!(
        app.permission(repo, "alice").await.unwrap(),
        Permission::Write
    );
    app.react(repo, asked, "eyes").await.unwrap();
    let status = app.comment(repo, issue, "Working on it").await.unwrap();
    app.edit_comment(repo, status.id, "Done").await.unwrap();
    assert_eq!(app.comments(repo, issue).await.unwrap().len(), 2);
    assert!(
        app.file(repo, "README.md", "trunk")
            .await
            .unwrap()
            .is_some()
    );
    github
        .push_commit(
            "acme-corp",
            "backend",
            "runbooks/1",
            &[("a", "b")],
            "Step 1",
            "alice",
        )
        .await
        .unwrap();
    let pr = app
        .create_pull(repo, "runbooks/1", "trunk", "[WIP] Runbook 1", "", true)
        .await
        .unwrap();
    app.update_pull(repo, pr.number, "Runbook 1", "Done.")
        .await
        .unwrap();
    app.add_labels(repo, pr.number, &["runbook".to_string()])
        .await
        .unwrap();
    app.comment(repo, pr.number, "On the pull request")
        .await
        .unwrap();
    app.mark_ready(repo, &pr).await.unwrap();
    app.convert_to_draft(repo, &pr.node_id).await.unwrap();
    app.git_token(repo).await.unwrap();
    app.bot(repo).await.unwrap();
}

#[tokio::test]
async fn every_token_names_one_repository_and_only_what_its_operation_needs() {
    let (github, _) = github_with_repo().await;
    let app = app(&github);
    let repo = app.installed_repo("acme-corp", "backend").await.unwrap();
    // Every call succeeds against a stand-in that refuses a token without the permission its
    // route needs: what the tokens hold is enough.
    every_call(&app, &github, &repo).await;
    let pull = &github.pulls("acme-corp", "backend")[0];
    assert!(pull.draft && pull.labels == ["runbook"]);
    assert_eq!(
        github.comments("acme-corp", "backend", pull.number).len(),
        1
    );

    // And it is no more: one repository, and a permission set per kind of operation, each
    // asked for once.
    let requests = token_requests(&github);
    for request in &requests {
        assert_eq!(request["repositories"], json!(["backend"]), "{request}");
        assert_eq!(request.as_object().unwrap().len(), 2, "{request}");
    }
    let mut sets: Vec<String> = requests
        .iter()
        .map(|r| r["permissions"].to_string())
        .collect();
    sets.sort();
    let mut expected: Vec<String> = [
        json!({"contents": "read"}),
        json!({"contents": "write"}),
        json!({"issues": "read", "pull_requests": "read"}),
        json!({"issues": "write", "pull_requests": "write"}),
        json!({"metadata": "read"}),
        json!({"pull_requests": "read"}),
        json!({"pull_requests": "write"}),
    ]
    .iter()
    .map(Value::to_string)
    .collect();
    expected.sort();
    assert_eq!(sets, expected);
}

/// Where git fetches and pushes `repo`, with `token`.
fn remote<'a>(repo: &'a RepoInfo, token: &'a SecretString) -> Remote<'a> {
    Remote {
        full_name: repo.full_name.as_str(),
        clone_url: &repo.clone_url,
        token,
    }
}

#[tokio::test]
async fn a_git_token_does_git_on_its_own_repository_and_nothing_else() {
    let (github, installation) = github_with_repo().await;
    github.add_repos(installation, &["website"]);
    let app = app(&github);
    let backend = app.installed_repo("acme-corp", "backend").await.unwrap();
    let website = app.installed_repo("acme-corp", "website").await.unwrap();
    let issue = github
        .add_issue("acme-corp", "backend", "Upgrade React", "", "alice")
        .unwrap();
    github
        .push_commit(
            "acme-corp",
            "backend",
            "feature",
            &[("f", "1")],
            "F",
            "alice",
        )
        .await
        .unwrap();
    let token = app.git_token(&backend).await.unwrap();

    // It cannot open a pull request or comment: GitHub's 403.
    let http = reqwest::Client::builder()
        .user_agent("runbooks-tests")
        .build()
        .unwrap();
    let api = github.api_url();
    for (path, body) in [
        (
            "/repos/acme-corp/backend/pulls".to_string(),
            json!({"title": "T", "head": "feature", "base": "trunk"}),
        ),
        (
            format!("/repos/acme-corp/backend/issues/{issue}/comments"),
            json!({"body": "hello"}),
        ),
    ] {
        let response = http
            .post(format!("{api}{path}"))
            .bearer_auth(token.expose_secret())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["message"], "Resource not accessible by integration");
    }
    assert!(github.pulls("acme-corp", "backend").is_empty());
    assert!(github.comments("acme-corp", "backend", issue).is_empty());

    // With the app's own git code: it fetches and pushes its repository...
    let data = tempfile::tempdir().unwrap();
    let cache = RepoCache::new(data.path());
    let bot = Identity {
        name: "runbooks[bot]".to_string(),
        email: "1+runbooks[bot]@users.noreply.github.com".to_string(),
    };
    let own = remote(&backend, &token);
    let tree = cache
        .worktree(&own, 1, "runbooks/1", "trunk")
        .await
        .unwrap();
    std::fs::write(tree.path().join("new.txt"), "new\n").unwrap();
    tree.commit_all("Step 1", &bot).await.unwrap();
    let pushed = tree.push(&own).await.unwrap();
    assert_eq!(
        github
            .branch_sha("acme-corp", "backend", "runbooks/1")
            .await
            .unwrap(),
        Some(pushed)
    );

    // ... but not another one of the installation: GitHub's 404, for fetch and push alike.
    let other = remote(&website, &token);
    assert!(cache.update_mirror(&other).await.is_err());
    let website_token = app.git_token(&website).await.unwrap();
    let allowed = remote(&website, &website_token);
    let tree = cache
        .worktree(&allowed, 2, "runbooks/2", "main")
        .await
        .unwrap();
    std::fs::write(tree.path().join("new.txt"), "new\n").unwrap();
    tree.commit_all("Step 1", &bot).await.unwrap();
    assert!(tree.push(&other).await.is_err());
    assert_eq!(
        github
            .branch_sha("acme-corp", "website", "runbooks/2")
            .await
            .unwrap(),
        None
    );
    let refused: Vec<u16> = github
        .requests()
        .into_iter()
        .filter(|r| r.operation.starts_with("git/") && r.path.contains("/website"))
        .map(|r| r.status)
        .filter(|status| *status != 401)
        .collect();
    assert!(refused.contains(&404), "{refused:?}");
    assert_ne!(token.expose_secret(), website_token.expose_secret());
}

#[tokio::test]
async fn one_token_serves_every_call_of_an_operation_on_a_repository() {
    let (github, installation) = github_with_repo().await;
    github.add_repos(installation, &["website"]);
    let app = app(&github);
    let backend = app.installed_repo("acme-corp", "backend").await.unwrap();
    let website = app.installed_repo("acme-corp", "website").await.unwrap();
    github.clear_requests();
    const N: usize = 5;
    for _ in 0..N {
        assert!(
            app.file(&backend, "README.md", "trunk")
                .await
                .unwrap()
                .is_some()
        );
    }
    assert_eq!(count(&github, "repos/get-content"), N);
    assert_eq!(count(&github, TOKENS), 1);

    // Calls at once wait for the same new token rather than each asking for one.
    let calls = (0..N).map(|_| app.file(&website, "index.html", "main"));
    for file in futures_util::future::join_all(calls).await {
        assert!(file.unwrap().is_some());
    }
    assert_eq!(count(&github, TOKENS), 2);

    // Operations that need the same permissions share a token: `repos/get` minted the
    // metadata token when the repositories were resolved.
    for login in ["alice", "bob", "carol"] {
        app.permission(&backend, login).await.unwrap();
    }
    assert_eq!(count(&github, "repos/get-collaborator-permission-level"), 3);
    assert_eq!(count(&github, TOKENS), 2);
    let repositories: Vec<Value> = token_requests(&github)
        .into_iter()
        .map(|r| r["repositories"].clone())
        .collect();
    assert_eq!(repositories, [json!(["backend"]), json!(["website"])]);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    let (github, _) = github_with_repo().await;
    let app = app(&github);
    github.inject(Fault::bad_gateway("/repos/acme-corp/backend/installation").times(2));
    assert!(matches!(
        app.resolve("acme-corp", "backend").await.unwrap(),
        Resolution::Found(_)
    ));
    let statuses: Vec<u16> = github
        .requests_for("apps/get-repo-installation")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [502, 502, 200]);

    // A fault that outlasts the attempts is reported, after exactly `attempts` tries.
    let other = self::app(&github);
    github.clear_requests();
    github.inject(Fault::server_error("/app").times(10));
    let err = other.identity().await.unwrap_err();
    assert!(
        matches!(err, GitHubError::Status { status: 500, .. }),
        "{err}"
    );
    assert_eq!(count(&github, "apps/get-authenticated"), 4);
}

#[tokio::test]
async fn rate_limits_are_waited_out() {
    let (github, _) = github_with_repo().await;
    let app = app(&github);
    github.inject(Fault::secondary_rate_limit(
        "/repos/acme-corp/backend/installation",
        Duration::from_secs(1),
    ));
    let started = Instant::now();
    assert!(matches!(
        app.resolve("acme-corp", "backend").await.unwrap(),
        Resolution::Found(_)
    ));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    let statuses: Vec<u16> = github
        .requests_for("apps/get-repo-installation")
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [403, 200]);

    // A wait longer than the policy allows fails the call instead of hanging it.
    let impatient = GitHubApp::new(
        &github.api_url(),
        github.app_id(),
        &SecretString::from(github.private_key_pem()),
        RetryPolicy {
            max_wait: Duration::from_secs(2),
            ..quick()
        },
    )
    .unwrap();
    github.inject(Fault::too_many_requests("/app", Duration::from_secs(600)));
    let err = impatient.identity().await.unwrap_err();
    assert!(matches!(err, GitHubError::RateLimited { .. }), "{err}");
}

#[tokio::test]
async fn a_key_github_does_not_know_is_refused() {
    let (github, _) = github_with_repo().await;
    let foreign = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/standin/foreign-private-key.pem"
    ))
    .unwrap();
    let app = GitHubApp::new(
        &github.api_url(),
        github.app_id(),
        &SecretString::from(foreign),
        quick(),
    )
    .unwrap();
    let err = app.resolve("acme-corp", "backend").await.unwrap_err();
    assert!(
        matches!(err, GitHubError::Status { status: 401, .. }),
        "{err}"
    );
    let not_a_key = GitHubApp::new(&github.api_url(), 1, &SecretString::from("nope"), quick());
    assert!(matches!(not_a_key, Err(GitHubError::Config(_))));
}

#[tokio::test]
async fn github_enterprise_server_urls_work() {
    let github = StandIn::start_with(Options {
        enterprise: true,
        ..Options::default()
    })
    .await
    .unwrap();
    assert!(github.api_url().ends_with("/api/v3"));
    github
        .create_repo("acme-corp", "backend", "main", &[("a", "b")])
        .await
        .unwrap();
    github.install("acme-corp", &["backend"]);
    let app = app(&github);
    assert!(matches!(
        app.resolve("acme-corp", "backend").await.unwrap(),
        Resolution::Found(_)
    ));
    assert_eq!(app.identity().await.unwrap().slug, github.app_slug());
}

async fn server_for(github: &StandIn, backend: Backend) -> TestServer {
    support::server_for(github, backend, |_| {}).await
}

async fn creation_resolves_the_repository_or_answers_422(backend: Backend) {
    let (github, _) = github_with_repo().await;
    let t = server_for(&github, backend).await;

    for (org, repo) in [
        ("globex", "backend"),
        ("acme-corp", "website"),
        ("acme-corp", "missing"),
    ] {
        let mut body = minimal("p");
        body["repository"] = json!({"org": org, "name": repo});
        if org == "globex" {
            // A token for globex, so the 422 is about GitHub, not the token's scope.
            let token = support::create_token(&t.store, &["globex"]).await;
            t.api_as(&token)
                .create(&body)
                .await
                .refused(422, "unprocessable-entity");
        } else {
            let message = t
                .api()
                .create(&body)
                .await
                .refused(422, "unprocessable-entity");
            assert!(message.contains(&format!("acme-corp/{repo}")), "{message}");
        }
    }

    let doc = t
        .api()
        .create(&minimal("Upgrade React"))
        .await
        .expect("created");
    assert_eq!(doc.runbook_number, 1, "422s stored nothing");
    let stored = t.store.runbook(rn(1)).await.unwrap().unwrap();
    assert_eq!(
        stored.target_branch.as_deref(),
        Some("trunk"),
        "the default branch, recorded"
    );

    let mut body = minimal("p");
    body["target_branch"] = json!("release/1.x");
    json(t.create(body).await).await;
    assert_eq!(
        t.store
            .runbook(rn(2))
            .await
            .unwrap()
            .unwrap()
            .target_branch
            .as_deref(),
        Some("release/1.x")
    );
    t.stop().await;
}

/// A repository GitHub answers under another owner (transferred from acme-corp to globex; its
/// old name redirects) is checked against the token's organisations by its real owner, and
/// recorded under its real name: a token for acme-corp alone cannot create runbooks on
/// globex's repository by naming it acme-corp/backend.
async fn a_transferred_repository_is_checked_by_its_real_owner(backend: Backend) {
    let (github, _) = github_with_repo().await;
    github
        .transfer_repo("acme-corp", "backend", "globex")
        .await
        .unwrap();
    github.install("globex", &["backend"]);
    let t = server_for(&github, backend).await;
    let mut body = minimal("Upgrade React");
    body["oneshot"] = json!(false);

    // t.token is for acme-corp only.
    let message = t.api().create(&body).await.refused(403, "forbidden");
    assert!(message.contains("acme-corp/backend"), "{message}");
    assert!(message.contains("transferred"), "{message}");
    assert!(
        !message.contains("globex"),
        "the new owner is not named to a token that may not see it: {message}"
    );
    let redirected = |operation: &str, path: &str| {
        github
            .requests_for(operation)
            .iter()
            .any(|r| r.status == 301 && r.path == path)
    };
    assert!(
        redirected(
            "apps/get-repo-installation",
            "/repos/acme-corp/backend/installation"
        ) && redirected("repos/get", "/repos/acme-corp/backend"),
        "GitHub was asked by the old name and redirected"
    );
    // A token for globex alone did not name globex.
    let globex = support::create_token(&t.store, &["globex"]).await;
    t.api_as(&globex)
        .create(&body)
        .await
        .refused(403, "forbidden");
    assert!(
        t.store.runbook(rn(1)).await.unwrap().is_none(),
        "nothing stored"
    );

    // A token for both creates it, under the name GitHub gives the repository now.
    let both = support::create_token(&t.store, &["acme-corp", "globex"]).await;
    let doc = t.api_as(&both).create(&body).await.expect("created");
    assert_eq!(doc.runbook_number, 1);
    let stored = t.store.runbook(rn(1)).await.unwrap().unwrap();
    assert_eq!(
        (stored.org.as_str(), stored.repo.as_str()),
        ("globex", "backend")
    );
    assert_eq!(stored.target_branch.as_deref(), Some("trunk"));
    // So it is globex's runbook: its tokens see it, acme-corp's do not.
    t.api_as(&globex).runbook(1).await.expect("globex's");
    t.api().runbook(1).await.refused(404, "not-found");
    t.stop().await;
}

/// Waits until the server has handled every delivery it received.
async fn until_handled(t: &TestServer) {
    t.until_handled(Duration::from_secs(10)).await;
}

async fn installation_webhooks_change_what_is_allowed(backend: Backend) {
    let (github, installation) = github_with_repo().await;
    let t = server_for(&github, backend).await;
    let hook = t.url("/webhooks/github");
    assert_eq!(t.create(minimal("p")).await.status(), 202);

    // The repository is removed from the installation: refused at once, cache or not.
    let removed = github
        .installation_repositories_removed(installation, &["backend"])
        .unwrap();
    assert_eq!(github.send(&hook, &removed).await.unwrap().status, 202);
    until_handled(&t).await;
    expect_error(t.create(minimal("p")).await, 422, "unprocessable-entity").await;

    let added = github
        .installation_repositories_added(installation, &["backend"])
        .unwrap();
    assert_eq!(github.send(&hook, &added).await.unwrap().status, 202);
    until_handled(&t).await;
    assert_eq!(t.create(minimal("p")).await.status(), 202);

    // The app is uninstalled, then installed again.
    let deleted = github.installation_deleted(installation).unwrap();
    assert_eq!(github.send(&hook, &deleted).await.unwrap().status, 202);
    until_handled(&t).await;
    expect_error(t.create(minimal("p")).await, 422, "unprocessable-entity").await;

    let again = github.install("acme-corp", &["backend"]);
    let created = github.installation_created(again).unwrap();
    assert_eq!(github.send(&hook, &created).await.unwrap().status, 202);
    until_handled(&t).await;
    assert_eq!(t.create(minimal("p")).await.status(), 202);

    // A redelivery is acknowledged and has no second effect.
    let first = github.deliveries().last().cloned().unwrap();
    let redelivered = github.redeliver(&hook, &first).await.unwrap();
    assert_eq!(redelivered.status, 200);
    t.stop().await;
}

async fn webhooks_signed_by_the_stand_in_are_accepted_and_forgeries_refused(backend: Backend) {
    let (github, _) = github_with_repo().await;
    let t = server_for(&github, backend).await;
    let hook = t.url("/webhooks/github");
    let ping = github.send(&hook, &github.ping().unwrap()).await.unwrap();
    assert_eq!(ping.status, 200);
    let forged = reqwest::Client::new()
        .post(&hook)
        .header("x-github-event", "ping")
        .header("x-github-delivery", "forged")
        .header(
            "x-hub-signature-256",
            runbooks::github::webhook::sign(b"guess", b"{}"),
        )
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    t.stop().await;
}

both_backends!(
    creation_resolves_the_repository_or_answers_422,
    a_transferred_repository_is_checked_by_its_real_owner,
    installation_webhooks_change_what_is_allowed,
    webhooks_signed_by_the_stand_in_are_accepted_and_forgeries_refused,
);
