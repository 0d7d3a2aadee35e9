//! The GitHub stand-in over real HTTP: with octocrab configured as a GitHub App (so its models
//! prove the JSON deserializes), with plain reqwest (status codes, headers, error bodies), with
//! the git CLI (smart HTTP), and with a tiny webhook receiver.

use std::future::Future;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use octocrab::models::{AppId, InstallationId};
use octocrab::{Octocrab, OctocrabBuilder};
use reqwest::StatusCode;
use runbooks_standin::{Fault, StandIn};
use serde_json::{Value, json};

const OWNER: &str = "acme";
const REPO: &str = "widgets";
const FOREIGN_KEY: &str = include_str!("../../fixtures/standin/foreign-private-key.pem");

/// Every test gets a deadline, so a hang fails instead of blocking the suite.
async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test finished within its deadline")
}

/// GitHub refuses API requests without a User-Agent; every client here sends one.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("runbooks-standin-tests")
        .build()
        .expect("client builds")
}

/// A stand-in with `acme/widgets` (branch `main`) and the app installed on it.
async fn setup() -> (StandIn, u64) {
    let s = StandIn::start().await.expect("stand-in starts");
    s.create_repo(
        OWNER,
        REPO,
        "main",
        &[
            ("README.md", "# widgets\n"),
            ("src/lib.rs", "pub fn f() {}\n"),
        ],
    )
    .await
    .expect("repo created");
    let id = s.install(OWNER, &[REPO]);
    (s, id)
}

fn app_client(s: &StandIn) -> Octocrab {
    let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(s.private_key_pem().as_bytes())
        .expect("the fixture key parses");
    OctocrabBuilder::new()
        .base_uri(s.api_url())
        .expect("valid base uri")
        .app(AppId(s.app_id()), key)
        .build()
        .expect("octocrab builds")
}

fn installation_client(s: &StandIn, id: u64) -> Octocrab {
    app_client(s)
        .installation(InstallationId(id))
        .expect("installation client")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn jwt_with(claims: Value, pem: &str) -> String {
    let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).expect("key");
    octocrab::jsonwebtoken::encode(
        &octocrab::jsonwebtoken::Header::new(octocrab::jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .expect("jwt encodes")
}

fn app_jwt(s: &StandIn) -> String {
    let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(s.private_key_pem().as_bytes())
        .expect("key");
    octocrab::auth::create_jwt(AppId(s.app_id()), &key).expect("jwt")
}

/// An installation token obtained over HTTP, as the app does.
async fn token(s: &StandIn, id: u64) -> String {
    let response = client()
        .post(format!(
            "{}/app/installations/{id}/access_tokens",
            s.api_url()
        ))
        .bearer_auth(app_jwt(s))
        .send()
        .await
        .expect("token request");
    assert_eq!(response.status(), StatusCode::CREATED);
    let body: Value = response.json().await.expect("json");
    body["token"].as_str().expect("token string").to_string()
}

async fn get(s: &StandIn, token: &str, path: &str) -> (StatusCode, Value) {
    let response = client()
        .get(format!("{}{path}", s.api_url()))
        .header("authorization", format!("token {token}"))
        .send()
        .await
        .expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn send(
    s: &StandIn,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let response = client()
        .request(method, format!("{}{path}", s.api_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Runs the git CLI with a clean configuration in `home`.
fn git(home: &Path, cwd: &Path, args: &[&str]) -> Output {
    std::process::Command::new("git")
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Tester")
        .env("GIT_AUTHOR_EMAIL", "tester@example.com")
        .env("GIT_COMMITTER_NAME", "Tester")
        .env("GIT_COMMITTER_EMAIL", "tester@example.com")
        .output()
        .expect("git runs")
}

fn git_ok(home: &Path, cwd: &Path, args: &[&str]) -> String {
    let out = git(home, cwd, args);
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn basic_header(token: &str) -> String {
    use base64::Engine as _;
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
    format!("http.extraHeader=Authorization: Basic {encoded}")
}

/// Runs a blocking git command off the async runtime (the stand-in serves it meanwhile).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

// ----- app authentication -----------------------------------------------------------------

#[tokio::test]
async fn octocrab_as_an_app_reads_app_and_installations() {
    within(async {
        let (s, id) = setup().await;
        let app = app_client(&s);
        let me = app.current().app().await.expect("GET /app deserializes");
        assert_eq!(me.id, AppId(s.app_id()));
        assert_eq!(me.slug.as_deref(), Some(s.app_slug()));
        let installations = app
            .apps()
            .installations()
            .send()
            .await
            .expect("installations deserialize");
        assert_eq!(installations.items.len(), 1);
        assert_eq!(installations.items[0].id, InstallationId(id));
        assert_eq!(installations.items[0].account.login, OWNER);
        let inst = app
            .apps()
            .get_repository_installation(OWNER, REPO)
            .await
            .expect("repo installation");
        assert_eq!(inst.id, InstallationId(id));
        assert_eq!(inst.repository_selection.as_deref(), Some("selected"));
    })
    .await;
}

#[tokio::test]
async fn token_exchange_answers_201_with_an_expiring_ghs_token() {
    within(async {
        let (s, id) = setup().await;
        let (crab, token) = app_client(&s)
            .installation_and_token(InstallationId(id))
            .await
            .expect("token exchange");
        use octocrab::secrecy::ExposeSecret as _;
        let token = token.expose_secret().to_string();
        assert!(token.starts_with("ghs_") && token.len() == 40, "{token}");
        let repo = crab.repos(OWNER, REPO).get().await.expect("repo");
        assert_eq!(repo.full_name.as_deref(), Some("acme/widgets"));

        let response = client()
            .post(format!(
                "{}/app/installations/{id}/access_tokens",
                s.api_url()
            ))
            .bearer_auth(app_jwt(&s))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        let expires = humantime::parse_rfc3339(body["expires_at"].as_str().expect("expires_at"))
            .expect("RFC 3339");
        let lifetime = expires
            .duration_since(SystemTime::now())
            .expect("in the future");
        assert!(lifetime > Duration::from_secs(3500) && lifetime <= Duration::from_secs(3600));
        assert_eq!(body["permissions"]["pull_requests"], "write");
        assert_eq!(body["repository_selection"], "selected");
    })
    .await;
}

#[tokio::test]
async fn jwt_checks_follow_github() {
    within(async {
        let (s, _) = setup().await;
        let pem = s.private_key_pem();
        let app_id = s.app_id();
        let t = now();
        let cases = [
            (
                "valid, iss as a string",
                jwt_with(json!({"iss": app_id.to_string(), "iat": t - 60, "exp": t + 540}), pem),
                None,
            ),
            (
                "valid, iss as a number",
                jwt_with(json!({"iss": app_id, "iat": t - 60, "exp": t + 540}), pem),
                None,
            ),
            (
                "expired",
                jwt_with(json!({"iss": app_id, "iat": t - 700, "exp": t - 100}), pem),
                Some("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"),
            ),
            (
                "issued in the future",
                jwt_with(json!({"iss": app_id, "iat": t + 300, "exp": t + 600}), pem),
                Some("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"),
            ),
            (
                "lives longer than ten minutes",
                jwt_with(json!({"iss": app_id, "iat": t - 60, "exp": t + 600}), pem),
                Some("'Expiration time' claim ('exp') is too far in the future"),
            ),
            (
                "signed by another key",
                jwt_with(json!({"iss": app_id, "iat": t - 60, "exp": t + 540}), FOREIGN_KEY),
                Some("A JSON web token could not be decoded"),
            ),
            (
                "another app",
                jwt_with(json!({"iss": app_id + 1, "iat": t - 60, "exp": t + 540}), pem),
                Some("Integration not found"),
            ),
            ("not a JWT", "garbage".to_string(), Some("A JSON web token could not be decoded")),
        ];
        for (what, jwt, refusal) in cases {
            let response = client()
                .get(format!("{}/app", s.api_url()))
                .bearer_auth(&jwt)
                .send()
                .await
                .expect("request");
            let status = response.status();
            let body: Value = response.json().await.expect("json body");
            match refusal {
                None => assert_eq!(status, StatusCode::OK, "{what}: {body}"),
                Some(message) => {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                    assert_eq!(body["message"], message, "{what}");
                    assert!(body["documentation_url"].is_string(), "{what}");
                }
            }
        }
        // An installation token is not a JWT.
        let installation_token = token(&s, s.installations()[0]).await;
        let response = client()
            .get(format!("{}/app/installations", s.api_url()))
            .bearer_auth(installation_token)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        // And octocrab with the wrong key is refused too.
        let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(FOREIGN_KEY.as_bytes())
            .expect("key");
        let foreign = OctocrabBuilder::new()
            .base_uri(s.api_url())
            .expect("uri")
            .app(AppId(app_id), key)
            .build()
            .expect("client");
        match foreign.current().app().await {
            Err(octocrab::Error::GitHub { source, .. }) => {
                assert_eq!(source.status_code, StatusCode::UNAUTHORIZED);
            }
            other => panic!("expected a 401, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn installation_tokens_expire_and_die_with_the_installation() {
    within(async {
        let (s, id) = setup().await;
        let t = token(&s, id).await;
        assert_eq!(get(&s, &t, "/repos/acme/widgets").await.0, StatusCode::OK);

        s.expire_tokens();
        let (status, body) = get(&s, &t, "/repos/acme/widgets").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["message"], "Bad credentials");

        // A zero lifetime hands out tokens that are already expired: no sleeping needed.
        s.set_token_lifetime(Duration::ZERO);
        let dead = token(&s, id).await;
        assert_eq!(
            get(&s, &dead, "/repos/acme/widgets").await.0,
            StatusCode::UNAUTHORIZED
        );

        s.set_token_lifetime(Duration::from_secs(3600));
        let live = token(&s, id).await;
        assert_eq!(
            get(&s, &live, "/repos/acme/widgets").await.0,
            StatusCode::OK
        );
        assert!(s.uninstall(id));
        assert_eq!(
            get(&s, &live, "/repos/acme/widgets").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&s, "ghs_unknown", "/repos/acme/widgets").await.0,
            StatusCode::UNAUTHORIZED
        );
        let anonymous = client()
            .get(format!("{}/repos/acme/widgets", s.api_url()))
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

#[tokio::test]
async fn repositories_the_installation_cannot_see_are_404() {
    within(async {
        let (s, id) = setup().await;
        s.create_repo(OWNER, "secret", "main", &[("a", "b")])
            .await
            .expect("repo");
        s.create_repo("other-org", "tools", "main", &[("a", "b")])
            .await
            .expect("repo");
        let t = token(&s, id).await;
        for path in [
            "/repos/acme/secret",
            "/repos/other-org/tools",
            "/repos/acme/missing",
            "/repos/acme/secret/pulls",
            "/repos/acme/secret/issues/1",
        ] {
            let (status, body) = get(&s, &t, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(body["message"], "Not Found", "{path}");
            assert!(body["documentation_url"].is_string());
        }
        // GitHub names are case-insensitive.
        assert_eq!(get(&s, &t, "/repos/ACME/Widgets").await.0, StatusCode::OK);

        let app = app_client(&s);
        let err = app
            .apps()
            .get_repository_installation(OWNER, "secret")
            .await
            .expect_err("not installed there");
        match err {
            octocrab::Error::GitHub { source, .. } => {
                assert_eq!(source.status_code, StatusCode::NOT_FOUND)
            }
            other => panic!("unexpected {other:?}"),
        }

        // Adding the repository to the installation makes it visible with the same token.
        s.add_repos(id, &["secret"]);
        assert_eq!(get(&s, &t, "/repos/acme/secret").await.0, StatusCode::OK);
        let (_, listed) = get(&s, &t, "/installation/repositories").await;
        assert_eq!(listed["total_count"], 2);
        assert_eq!(listed["repositories"][1]["full_name"], "acme/widgets");
        s.remove_repos(id, &["secret"]);
        assert_eq!(
            get(&s, &t, "/repos/acme/secret").await.0,
            StatusCode::NOT_FOUND
        );

        // An "all repositories" installation sees everything of its account only.
        let all = s.install_all("other-org");
        let t = token(&s, all).await;
        assert_eq!(
            get(&s, &t, "/repos/other-org/tools").await.0,
            StatusCode::OK
        );
        assert_eq!(
            get(&s, &t, "/repos/acme/widgets").await.0,
            StatusCode::NOT_FOUND
        );

        // Unknown paths are GitHub's JSON 404 too.
        let (status, body) = get(&s, &t, "/no/such/thing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["message"], "Not Found");
    })
    .await;
}

#[tokio::test]
async fn tokens_scoped_to_repositories() {
    within(async {
        let (s, id) = setup().await;
        s.create_repo(OWNER, "gadgets", "main", &[("a", "b")])
            .await
            .expect("repo");
        s.add_repos(id, &["gadgets"]);
        let jwt = app_jwt(&s);
        let url = format!("{}/app/installations/{id}/access_tokens", s.api_url());
        let response = client()
            .post(&url)
            .bearer_auth(&jwt)
            .json(&json!({"repositories": ["gadgets"]}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["repositories"][0]["name"], "gadgets");
        let t = body["token"].as_str().expect("token").to_string();
        assert_eq!(get(&s, &t, "/repos/acme/gadgets").await.0, StatusCode::OK);
        assert_eq!(
            get(&s, &t, "/repos/acme/widgets").await.0,
            StatusCode::NOT_FOUND
        );

        let response = client()
            .post(&url)
            .bearer_auth(&jwt)
            .json(&json!({"repositories": ["nope"]}))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let response = client()
            .post(format!(
                "{}/app/installations/999999/access_tokens",
                s.api_url()
            ))
            .bearer_auth(&jwt)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    })
    .await;
}

// ----- repositories, issues, comments, reactions, labels, permissions ------------------------

#[tokio::test]
async fn repository_object_points_at_the_git_endpoint() {
    within(async {
        let (s, id) = setup().await;
        let crab = installation_client(&s, id);
        let repo = crab.repos(OWNER, REPO).get().await.expect("repo");
        assert_eq!(repo.default_branch.as_deref(), Some("main"));
        let clone_url = repo.clone_url.expect("clone_url").to_string();
        assert_eq!(clone_url, format!("{}/git/acme/widgets.git", s.api_url()));
        assert_eq!(repo.owner.expect("owner").login, OWNER);
        assert_eq!(repo.private, Some(true));
        assert!(repo.node_id.is_some());
        assert!(
            repo.html_url
                .expect("html_url")
                .to_string()
                .ends_with("/acme/widgets")
        );
    })
    .await;
}

#[tokio::test]
async fn comments_reactions_and_labels() {
    within(async {
        let (s, id) = setup().await;
        let issue = s
            .add_issue(OWNER, REPO, "Upgrade React", "Please do", "alice")
            .expect("issue");
        let crab = installation_client(&s, id);
        let got = crab.issues(OWNER, REPO).get(issue).await.expect("issue");
        assert_eq!(got.title, "Upgrade React");
        assert_eq!(got.user.login, "alice");
        assert!(got.pull_request.is_none());

        let comment = crab
            .issues(OWNER, REPO)
            .create_comment(issue, "Working on it")
            .await
            .expect("comment");
        assert_eq!(comment.user.login, s.bot_login());
        assert_eq!(comment.user.r#type, "Bot");
        let updated = crab
            .issues(OWNER, REPO)
            .update_comment(comment.id, "Done")
            .await
            .expect("update");
        assert_eq!(updated.body.as_deref(), Some("Done"));
        let listed = crab
            .issues(OWNER, REPO)
            .list_comments(issue)
            .send()
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 1);
        assert_eq!(s.comments(OWNER, REPO, issue)[0].body, "Done");
        assert!(s.comments(OWNER, REPO, issue)[0].edited);

        // Reactions: 201 when new, 200 when the same user already reacted the same way.
        let user_comment = s
            .add_comment(OWNER, REPO, issue, "alice", "/runbook fix it")
            .expect("comment");
        let t = token(&s, id).await;
        let path = format!("/repos/acme/widgets/issues/comments/{user_comment}/reactions");
        let (status, _, first) = send(
            &s,
            &t,
            reqwest::Method::POST,
            &path,
            json!({"content": "eyes"}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, _, second) = send(
            &s,
            &t,
            reqwest::Method::POST,
            &path,
            json!({"content": "eyes"}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(first["id"], second["id"]);
        let (status, _, body) = send(
            &s,
            &t,
            reqwest::Method::POST,
            &path,
            json!({"content": "shrug"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["message"], "Validation Failed");
        let reaction = crab
            .issues(OWNER, REPO)
            .create_comment_reaction(
                user_comment,
                octocrab::models::reactions::ReactionContent::Rocket,
            )
            .await
            .expect("reaction deserializes");
        assert_eq!(reaction.user.login, s.bot_login());
        let reactions = s.reactions(OWNER, REPO, user_comment);
        assert_eq!(
            reactions
                .iter()
                .map(|r| r.content.as_str())
                .collect::<Vec<_>>(),
            ["eyes", "rocket"]
        );

        // Labels: the answer lists all of the issue's labels, case-insensitively de-duplicated.
        let labels = crab
            .issues(OWNER, REPO)
            .add_labels(issue, &["runbook".to_string(), "deps".to_string()])
            .await
            .expect("labels");
        assert_eq!(labels.len(), 2);
        let (status, _, body) = send(
            &s,
            &t,
            reqwest::Method::POST,
            &format!("/repos/acme/widgets/issues/{issue}/labels"),
            json!({"labels": ["DEPS", "ci"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = body
            .as_array()
            .expect("array")
            .iter()
            .map(|l| l["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["runbook", "deps", "ci"]);
        assert_eq!(s.labels(OWNER, REPO, issue), ["runbook", "deps", "ci"]);

        // Missing comment body and bad JSON are refused as GitHub does.
        let (status, _, _) = send(
            &s,
            &t,
            reqwest::Method::POST,
            &format!("/repos/acme/widgets/issues/{issue}/comments"),
            json!({}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let response = client()
            .post(format!(
                "{}/repos/acme/widgets/issues/{issue}/comments",
                s.api_url()
            ))
            .bearer_auth(&t)
            .body("{not json")
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let (status, _, _) = send(
            &s,
            &t,
            reqwest::Method::POST,
            "/repos/acme/widgets/issues/999/comments",
            json!({"body": "x"}),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn collaborator_permission_levels() {
    within(async {
        let (s, id) = setup().await;
        for (user, role) in [
            ("ada", "admin"),
            ("mia", "maintain"),
            ("wes", "write"),
            ("tia", "triage"),
            ("rae", "read"),
            ("nel", "none"),
        ] {
            s.set_permission(OWNER, REPO, user, role);
        }
        let t = token(&s, id).await;
        // GitHub's legacy `permission` folds maintain into write and triage into read;
        // `role_name` keeps the real role.
        for (user, permission, role) in [
            ("ada", "admin", "admin"),
            ("mia", "write", "maintain"),
            ("wes", "write", "write"),
            ("tia", "read", "triage"),
            ("rae", "read", "read"),
            ("nel", "none", "none"),
            ("stranger", "none", "none"),
            ("acme", "admin", "admin"),
        ] {
            let (status, body) = get(
                &s,
                &t,
                &format!("/repos/acme/widgets/collaborators/{user}/permission"),
            )
            .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body["permission"], permission, "{user}");
            assert_eq!(body["role_name"], role, "{user}");
            assert_eq!(body["user"]["login"], user);
        }
        // octocrab's typed `RepoPermission` cannot read GitHub's "write"/"read"/"none" (its
        // enum only knows pull/push/admin/maintain/triage), so the app must read this endpoint
        // as JSON. Pin that down so an octocrab upgrade that fixes it is noticed.
        let crab = installation_client(&s, id);
        let typed = crab
            .repos(OWNER, REPO)
            .get_contributor_permission("wes")
            .send()
            .await;
        assert!(typed.is_err(), "octocrab learned GitHub's permission names");
        let raw: Value = crab
            .get(
                "/repos/acme/widgets/collaborators/wes/permission",
                None::<&()>,
            )
            .await
            .expect("raw JSON");
        assert_eq!(raw["permission"], "write");
    })
    .await;
}

// ----- pull requests --------------------------------------------------------------------

#[tokio::test]
async fn pull_requests_create_list_get_update() {
    within(async {
        let (s, id) = setup().await;
        let issue = s
            .add_issue(OWNER, REPO, "Tracking", "", "alice")
            .expect("issue");
        assert_eq!(issue, 1);
        s.push_commit(
            OWNER,
            REPO,
            "runbook/1",
            &[("a.txt", "a\n")],
            "Step 1",
            "alice",
        )
        .await
        .expect("push");
        s.push_commit(
            OWNER,
            REPO,
            "runbook/2",
            &[("b.txt", "b\n")],
            "Step 2",
            "alice",
        )
        .await
        .expect("push");
        let crab = installation_client(&s, id);
        let pulls = crab.pulls(OWNER, REPO);

        let pr = pulls
            .create("[WIP] Step 1", "runbook/1", "main")
            .body("body")
            .draft(true)
            .send()
            .await
            .expect("PR deserializes");
        assert_eq!(pr.number, 2, "issues and pull requests share one sequence");
        assert_eq!(pr.draft, Some(true));
        assert_eq!(pr.head.ref_field, "runbook/1");
        assert_eq!(pr.base.ref_field, "main");
        assert_eq!(pr.head.label.as_deref(), Some("acme:runbook/1"));
        assert_eq!(pr.user.as_ref().expect("user").login, s.bot_login());
        assert_eq!(pr.user.as_ref().expect("user").r#type, "Bot");
        assert_eq!(pr.commits, Some(1));
        assert_eq!(pr.additions, Some(1));
        assert!(pr.node_id.is_some());
        assert_eq!(
            pr.head.sha,
            s.branch_sha(OWNER, REPO, "runbook/1")
                .await
                .expect("git")
                .expect("branch")
        );
        let second = pulls
            .create("Step 2", "acme:runbook/2", "runbook/1")
            .send()
            .await
            .expect("stacked PR");
        assert_eq!(second.number, 3);
        assert_eq!(
            s.add_issue(OWNER, REPO, "Later", "", "bob").expect("issue"),
            4
        );

        // Filters.
        let by_head = pulls
            .list()
            .head("acme:runbook/2")
            .send()
            .await
            .expect("list");
        assert_eq!(
            by_head.items.iter().map(|p| p.number).collect::<Vec<_>>(),
            [3]
        );
        let by_base = pulls.list().base("main").send().await.expect("list");
        assert_eq!(
            by_base.items.iter().map(|p| p.number).collect::<Vec<_>>(),
            [2]
        );
        let t = token(&s, id).await;
        // GitHub ignores a head filter without `owner:` and returns everything.
        let (_, all) = get(&s, &t, "/repos/acme/widgets/pulls?head=runbook/2").await;
        assert_eq!(all.as_array().expect("array").len(), 2);
        let (_, newest_first) = get(&s, &t, "/repos/acme/widgets/pulls").await;
        assert_eq!(newest_first[0]["number"], 3);

        // Paging with GitHub's Link header.
        let response = client()
            .get(format!(
                "{}/repos/acme/widgets/pulls?per_page=1",
                s.api_url()
            ))
            .bearer_auth(&t)
            .send()
            .await
            .expect("request");
        let link = response.headers()["link"]
            .to_str()
            .expect("ascii")
            .to_string();
        assert!(
            link.contains("rel=\"next\"") && link.contains("page=2"),
            "{link}"
        );
        let page: Vec<Value> = response.json().await.expect("json");
        assert_eq!(page.len(), 1);

        // Update: title, body, base; closing; state filters.
        let updated = pulls
            .update(2)
            .title("Step 1")
            .body("new body")
            .send()
            .await
            .expect("update");
        assert_eq!(updated.title.as_deref(), Some("Step 1"));
        assert_eq!(updated.body.as_deref(), Some("new body"));
        assert_eq!(updated.draft, Some(true), "REST does not change drafts");
        let retargeted = pulls.update(3).base("main").send().await.expect("retarget");
        assert_eq!(retargeted.base.ref_field, "main");
        let closed = pulls
            .update(2)
            .state(octocrab::params::pulls::State::Closed)
            .send()
            .await
            .expect("close");
        assert_eq!(closed.state, Some(octocrab::models::IssueState::Closed));
        let open = pulls.list().send().await.expect("list");
        assert_eq!(open.items.iter().map(|p| p.number).collect::<Vec<_>>(), [3]);
        let closed_list = pulls
            .list()
            .state(octocrab::params::State::Closed)
            .send()
            .await
            .expect("list");
        assert_eq!(
            closed_list
                .items
                .iter()
                .map(|p| p.number)
                .collect::<Vec<_>>(),
            [2]
        );
        let all = pulls
            .list()
            .state(octocrab::params::State::All)
            .send()
            .await
            .expect("list");
        assert_eq!(all.items.len(), 2);
        let got = pulls.get(3).await.expect("get");
        assert_eq!(got.base.ref_field, "main");

        // A closed pull request keeps its base.
        let (status, _, body) = send(
            &s,
            &t,
            reqwest::Method::PATCH,
            "/repos/acme/widgets/pulls/2",
            json!({"base": "runbook/2"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

        // The issue side of a pull request.
        let as_issue = crab.issues(OWNER, REPO).get(3).await.expect("issue");
        assert!(as_issue.pull_request.is_some());
        assert!(as_issue.html_url.to_string().ends_with("/pull/3"));
    })
    .await;
}

#[tokio::test]
async fn pull_request_validation_errors() {
    within(async {
        let (s, id) = setup().await;
        s.push_commit(OWNER, REPO, "feature", &[("f", "1")], "Feature", "alice")
            .await
            .expect("push");
        let t = token(&s, id).await;
        let create = |body: Value| {
            let t = t.clone();
            let s = &s;
            async move {
                let (status, _, body) = send(
                    s,
                    &t,
                    reqwest::Method::POST,
                    "/repos/acme/widgets/pulls",
                    body,
                )
                .await;
                (status, body)
            }
        };
        let (status, headers_body) =
            create(json!({"title": "F", "head": "feature", "base": "main"})).await;
        assert_eq!(status, StatusCode::CREATED, "{headers_body}");

        let (status, body) = create(json!({"title": "F", "head": "feature", "base": "main"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["message"], "Validation Failed");
        assert_eq!(
            body["errors"][0]["message"],
            "A pull request already exists for acme:feature."
        );
        assert_eq!(body["errors"][0]["code"], "custom");

        let (status, body) = create(json!({"title": "F", "head": "nope", "base": "main"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "head");
        assert_eq!(body["errors"][0]["code"], "invalid");

        let (status, body) = create(json!({"title": "F", "head": "feature", "base": "nope"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["errors"][0]["field"], "base");

        let (status, body) = create(json!({"title": "F", "head": "main", "base": "feature"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body["errors"][0]["message"],
            "No commits between feature and main"
        );

        let (status, body) = create(json!({"head": "feature"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let fields: Vec<&str> = body["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["field"].as_str().expect("field"))
            .collect();
        assert_eq!(fields, ["title", "base"]);
        assert_eq!(
            s.pulls(OWNER, REPO).len(),
            1,
            "refused requests change nothing"
        );

        // Octocrab surfaces the 422.
        let crab = installation_client(&s, id);
        match crab
            .pulls(OWNER, REPO)
            .create("F", "feature", "main")
            .send()
            .await
        {
            Err(octocrab::Error::GitHub { source, .. }) => {
                assert_eq!(source.status_code, StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(source.message, "Validation Failed");
            }
            other => panic!("expected a 422, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn merges_pushes_and_branch_deletion_move_pull_requests() {
    within(async {
        let (s, id) = setup().await;
        s.push_commit(OWNER, REPO, "one", &[("one.txt", "1\n")], "One", "alice")
            .await
            .expect("push");
        s.push_commit(OWNER, REPO, "two", &[("two.txt", "2\n")], "Two", "alice")
            .await
            .expect("push");
        let crab = installation_client(&s, id);
        let first = crab
            .pulls(OWNER, REPO)
            .create("One", "one", "main")
            .send()
            .await
            .expect("pr");
        let stacked = s
            .open_pull(OWNER, REPO, "two", "one", "Two", "bob")
            .await
            .expect("a person opens a PR");
        assert_eq!(s.pull(OWNER, REPO, stacked).expect("pr").author, "bob");

        // A push to the head branch moves the pull request's head.
        let new_tip = s
            .push_commit(OWNER, REPO, "one", &[("one.txt", "1b\n")], "More", "alice")
            .await
            .expect("push");
        assert_eq!(
            s.pull(OWNER, REPO, first.number).expect("pr").head_sha,
            new_tip
        );
        let got = crab
            .pulls(OWNER, REPO)
            .get(first.number)
            .await
            .expect("get");
        assert_eq!(got.head.sha, new_tip);
        assert_eq!(got.commits, Some(2));

        // Merging makes a real merge commit on the base branch.
        let merge = s
            .merge_pull(OWNER, REPO, first.number, "carol")
            .await
            .expect("merge");
        assert_eq!(
            s.branch_sha(OWNER, REPO, "main").await.expect("git"),
            Some(merge.clone())
        );
        assert_eq!(
            s.file(OWNER, REPO, "main", "one.txt")
                .await
                .expect("git")
                .as_deref(),
            Some("1b\n")
        );
        let merged = crab
            .pulls(OWNER, REPO)
            .get(first.number)
            .await
            .expect("get");
        assert_eq!(merged.merged, Some(true));
        assert_eq!(merged.merge_commit_sha.as_deref(), Some(merge.as_str()));
        assert_eq!(merged.merged_by.expect("merged_by").login, "carol");
        let event = s
            .pull_request_closed(OWNER, REPO, first.number)
            .await
            .expect("event");
        assert_eq!(event.payload["pull_request"]["merged"], true);
        assert_eq!(event.payload["action"], "closed");

        // Deleting a base branch closes the pull requests based on it, for good.
        s.delete_branch(OWNER, REPO, "one").await.expect("delete");
        let orphan = s.pull(OWNER, REPO, stacked).expect("pr");
        assert!(!orphan.open);
        let t = token(&s, id).await;
        let (status, _, _) = send(
            &s,
            &t,
            reqwest::Method::PATCH,
            &format!("/repos/acme/widgets/pulls/{stacked}"),
            json!({"state": "open"}),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            s.merge_pull(OWNER, REPO, stacked, "carol").await.is_err(),
            "closed pull requests cannot be merged"
        );
    })
    .await;
}

// ----- GraphQL --------------------------------------------------------------------------

#[tokio::test]
async fn graphql_marks_ready_and_converts_to_draft() {
    within(async {
        let (s, id) = setup().await;
        s.push_commit(OWNER, REPO, "feature", &[("f", "1")], "Feature", "alice")
            .await
            .expect("push");
        let crab = installation_client(&s, id);
        let pr = crab
            .pulls(OWNER, REPO)
            .create("[WIP] F", "feature", "main")
            .draft(true)
            .send()
            .await
            .expect("draft PR");
        let node = pr.node_id.expect("node id");

        let data: Value = crab
            .graphql(&json!({
                "query": "mutation Ready($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) { pullRequest { id isDraft number } } }",
                "variables": {"id": node},
            }))
            .await
            .expect("graphql");
        assert_eq!(
            data,
            json!({"markPullRequestReadyForReview": {"pullRequest": {"id": node, "isDraft": false, "number": pr.number}}})
        );
        assert!(!s.pull(OWNER, REPO, pr.number).expect("pr").draft);
        let rest = crab.pulls(OWNER, REPO).get(pr.number).await.expect("get");
        assert_eq!(rest.draft, Some(false));

        // Inline literal, alias, input as a whole variable.
        let data: Value = crab
            .graphql(&json!({
                "query": "mutation($input: ConvertPullRequestToDraftInput!) { d: convertPullRequestToDraft(input: $input) { clientMutationId pullRequest { isDraft __typename } } }",
                "variables": {"input": {"pullRequestId": node, "clientMutationId": "abc"}},
            }))
            .await
            .expect("graphql");
        assert_eq!(
            data,
            json!({"d": {"clientMutationId": "abc", "pullRequest": {"isDraft": true, "__typename": "PullRequest"}}})
        );
        assert!(s.pull(OWNER, REPO, pr.number).expect("pr").draft);

        let t = token(&s, id).await;
        let post = |body: Value| {
            let t = t.clone();
            let url = s.graphql_url();
            async move {
                let response = client()
                    .post(url)
                    .bearer_auth(t)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), StatusCode::OK);
                response.json::<Value>().await.expect("json")
            }
        };
        let unknown = post(json!({"query": "mutation { markPullRequestReadyForReview(input: {pullRequestId: \"PR_nope\"}) { pullRequest { isDraft } } }"})).await;
        assert_eq!(unknown["data"]["markPullRequestReadyForReview"], Value::Null);
        assert_eq!(unknown["errors"][0]["type"], "NOT_FOUND");
        let bad_field = post(json!({"query": format!("mutation {{ markPullRequestReadyForReview(input: {{pullRequestId: \"{node}\"}}) {{ pullRequest {{ nope }} }} }}")})).await;
        assert!(bad_field.get("data").is_none());
        assert_eq!(bad_field["errors"][0]["extensions"]["code"], "undefinedField");
        assert!(s.pull(OWNER, REPO, pr.number).expect("pr").draft, "invalid documents change nothing");
        let syntax = post(json!({"query": "mutation { ("})).await;
        assert!(syntax["errors"][0]["message"].as_str().expect("message").contains("Parse error"));

        // Another installation cannot see the pull request.
        s.create_repo("other", "repo", "main", &[("a", "b")]).await.expect("repo");
        let other = s.install("other", &["repo"]);
        let other_token = token(&s, other).await;
        let response = client()
            .post(s.graphql_url())
            .bearer_auth(other_token)
            .json(&json!({"query": "mutation($id: ID!) { markPullRequestReadyForReview(input: {pullRequestId: $id}) { pullRequest { isDraft } } }", "variables": {"id": node}}))
            .send()
            .await
            .expect("request");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["errors"][0]["type"], "NOT_FOUND");
        let anonymous = client()
            .post(s.graphql_url())
            .json(&json!({"query": "{ __typename }"}))
            .send()
            .await
            .expect("request");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}

// ----- git smart HTTP -------------------------------------------------------------------

#[tokio::test]
async fn git_clone_and_push_over_smart_http() {
    within(async {
        let (s, id) = setup().await;
        let t = token(&s, id).await;
        let url = s.clone_url(OWNER, REPO);
        let home = tempfile::tempdir().expect("tempdir");
        let home_path = home.path().to_path_buf();

        // Without credentials: GitHub's Basic challenge, and git gives up.
        let response = client()
            .get(format!("{url}/info/refs?service=git-upload-pack"))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"GitHub\""
        );
        let (h, u) = (home_path.clone(), url.clone());
        let out = blocking(move || git(&h, &h, &["clone", &u, "anon"])).await;
        assert!(!out.status.success());
        let (h, u) = (home_path.clone(), url.clone());
        let out =
            blocking(move || git(&h, &h, &["-c", &basic_header("ghs_wrong"), "ls-remote", &u]))
                .await;
        assert!(!out.status.success());

        // Clone with a credential helper: git first gets the 401 challenge, then retries.
        let helper = format!(
            "credential.helper=!f() {{ echo username=x-access-token; echo password={t}; }}; f"
        );
        let (h, u, hp) = (home_path.clone(), url.clone(), helper.clone());
        blocking(move || git_ok(&h, &h, &["-c", &hp, "clone", &u, "work"])).await;
        let work = home_path.join("work");
        assert_eq!(
            std::fs::read_to_string(work.join("README.md")).expect("cloned file"),
            "# widgets\n"
        );

        // Push a new branch with an extra header (what the app does: no token on disk).
        std::fs::write(work.join("new.txt"), "new\n").expect("write");
        let (h, w, header) = (home_path.clone(), work.clone(), basic_header(&t));
        let pushed = blocking(move || {
            git_ok(&h, &w, &["checkout", "-q", "-b", "runbook/1"]);
            git_ok(&h, &w, &["add", "new.txt"]);
            git_ok(&h, &w, &["commit", "-q", "-m", "Step 1\n\nRunbook: 1"]);
            git_ok(
                &h,
                &w,
                &["-c", &header, "push", "-q", "origin", "runbook/1"],
            );
            git_ok(&h, &w, &["rev-parse", "HEAD"])
        })
        .await;
        assert_eq!(
            s.branch_sha(OWNER, REPO, "runbook/1").await.expect("git"),
            Some(pushed.clone())
        );
        let messages = s
            .commit_messages(OWNER, REPO, "runbook/1")
            .await
            .expect("log");
        assert_eq!(messages[0], "Step 1\n\nRunbook: 1");

        // A large push goes out chunked (bigger than git's minimum http.postBuffer).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let big: String = (0..40_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                format!("{:016x}\n", x)
            })
            .collect();
        std::fs::write(work.join("big.txt"), &big).expect("write");
        let (h, w, header) = (home_path.clone(), work.clone(), basic_header(&t));
        let big_sha = blocking(move || {
            git_ok(&h, &w, &["add", "big.txt"]);
            git_ok(&h, &w, &["commit", "-q", "-m", "Big"]);
            git_ok(
                &h,
                &w,
                &[
                    "-c",
                    &header,
                    "-c",
                    "http.postBuffer=65536",
                    "push",
                    "-q",
                    "origin",
                    "runbook/1",
                ],
            );
            git_ok(&h, &w, &["rev-parse", "HEAD"])
        })
        .await;
        assert_eq!(
            s.branch_sha(OWNER, REPO, "runbook/1").await.expect("git"),
            Some(big_sha)
        );
        assert_eq!(
            s.file(OWNER, REPO, "runbook/1", "big.txt")
                .await
                .expect("git")
                .map(|f| f.len()),
            Some(big.len())
        );

        // The request log names the git operations and the installation.
        // (A large push first sends a small probe request.)
        let pushes = s.requests_for("git/receive-pack");
        assert!(pushes.len() >= 2);
        assert!(
            pushes
                .iter()
                .all(|r| r.status == 200 && r.installation == Some(id))
        );
        assert!(
            s.requests_for("git/info-refs")
                .iter()
                .any(|r| r.status == 401)
        );

        // Another installation's token cannot read the repository.
        s.create_repo("other", "repo", "main", &[("a", "b")])
            .await
            .expect("repo");
        let other = s
            .create_token(s.install("other", &["repo"]))
            .expect("token");
        let response = client()
            .get(format!("{url}/info/refs?service=git-upload-pack"))
            .basic_auth("x-access-token", Some(other))
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn git_upload_pack_accepts_gzip_bodies() {
    within(async {
        let (s, id) = setup().await;
        let t = s.create_token(id).expect("token");
        let sha = s
            .branch_sha(OWNER, REPO, "main")
            .await
            .expect("git")
            .expect("main");
        let want = format!("want {sha}\n");
        let request = format!("{:04x}{want}00000009done\n", want.len() + 4);
        // gzip it with the system's gzip, as the git CLI would with a large negotiation.
        let mut child = std::process::Command::new("gzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("gzip runs");
        {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(request.as_bytes())
                .expect("write");
        }
        let gz = child.wait_with_output().expect("gzip").stdout;
        let response = client()
            .post(format!("{}/git-upload-pack", s.clone_url(OWNER, REPO)))
            .basic_auth("x-access-token", Some(t))
            .header("content-type", "application/x-git-upload-pack-request")
            .header("content-encoding", "gzip")
            .body(gz)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.bytes().await.expect("body");
        assert!(
            body.starts_with(b"0008NAK\n"),
            "{:?}",
            &body[..body.len().min(40)]
        );
        assert!(
            body.windows(4).any(|w| w == b"PACK"),
            "a packfile came back"
        );
    })
    .await;
}

// ----- faults and the request log -------------------------------------------------------

#[tokio::test]
async fn injected_faults_answer_like_github_then_stop() {
    within(async {
        let (s, id) = setup().await;
        let issue = s.add_issue(OWNER, REPO, "T", "", "alice").expect("issue");
        let t = token(&s, id).await;
        let path = format!("/repos/acme/widgets/issues/{issue}/comments");
        let post = || send(&s, &t, reqwest::Method::POST, &path, json!({"body": "hi"}));

        s.inject(Fault::server_error(&path).method("POST"));
        let (status, _, body) = post().await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["message"], "Server Error");
        assert_eq!(
            post().await.0,
            StatusCode::CREATED,
            "a fault applies once by default"
        );

        s.inject(Fault::bad_gateway("/repos/acme/widgets/issues").times(2));
        for _ in 0..2 {
            let response = client()
                .post(format!("{}{path}", s.api_url()))
                .bearer_auth(&t)
                .json(&json!({"body": "hi"}))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            assert!(response.text().await.expect("text").contains("Bad Gateway"));
        }

        s.inject(Fault::secondary_rate_limit(&path, Duration::from_secs(42)));
        let (status, headers, body) = post().await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["retry-after"], "42");
        assert!(
            body["message"]
                .as_str()
                .expect("message")
                .starts_with("You have exceeded a secondary rate limit")
        );

        s.inject(Fault::too_many_requests(&path, Duration::from_secs(7)));
        let (status, headers, _) = post().await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers["retry-after"], "7");

        s.inject(Fault::primary_rate_limit(&path, Duration::from_secs(60)));
        let (status, headers, _) = post().await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(headers["x-ratelimit-remaining"], "0");

        s.inject(Fault::unauthorized(&path));
        assert_eq!(post().await.0, StatusCode::UNAUTHORIZED);

        // Method filters: a GET is not affected by a POST fault.
        s.inject(Fault::server_error(&path).method("POST"));
        assert_eq!(get(&s, &t, &path).await.0, StatusCode::OK);
        assert_eq!(post().await.0, StatusCode::INTERNAL_SERVER_ERROR);

        // octocrab reports the status GitHub gave.
        s.inject(Fault::secondary_rate_limit(
            "/repos/acme/widgets",
            Duration::from_secs(1),
        ));
        let crab = installation_client(&s, id);
        match crab.repos(OWNER, REPO).get().await {
            Err(octocrab::Error::GitHub { source, .. }) => {
                assert_eq!(source.status_code, StatusCode::FORBIDDEN)
            }
            other => panic!("expected a 403, got {other:?}"),
        }
        assert_eq!(
            s.comments(OWNER, REPO, issue).len(),
            1,
            "faulted requests did nothing"
        );
    })
    .await;
}

#[tokio::test]
async fn every_request_is_recorded_with_githubs_headers() {
    within(async {
        let (s, id) = setup().await;
        let crab = installation_client(&s, id);
        crab.repos(OWNER, REPO).get().await.expect("repo");
        let issue = s.add_issue(OWNER, REPO, "T", "", "alice").expect("issue");
        crab.issues(OWNER, REPO)
            .create_comment(issue, "hello")
            .await
            .expect("comment");
        let t = token(&s, id).await;
        let response = client()
            .get(format!("{}/repos/acme/widgets?x=1", s.api_url()))
            .bearer_auth(&t)
            .send()
            .await
            .expect("request");
        let headers = response.headers();
        assert!(headers.contains_key("x-github-request-id"));
        assert_eq!(headers["x-ratelimit-limit"], "5000");
        assert!(headers.contains_key("x-ratelimit-remaining"));
        assert!(headers.contains_key("x-ratelimit-reset"));
        assert_eq!(headers["x-ratelimit-resource"], "core");
        assert!(
            headers["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with("application/json")
        );

        let ops: Vec<(String, u16)> = s
            .requests()
            .into_iter()
            .map(|r| (r.operation, r.status))
            .collect();
        assert_eq!(
            ops,
            [
                ("apps/create-installation-access-token".to_string(), 201),
                ("repos/get".to_string(), 200),
                ("issues/create-comment".to_string(), 201),
                ("apps/create-installation-access-token".to_string(), 201),
                ("repos/get".to_string(), 200),
            ]
        );
        let last = s.requests().pop().expect("a request");
        assert_eq!(last.method, "GET");
        assert_eq!(last.path, "/repos/acme/widgets");
        assert_eq!(last.query.as_deref(), Some("x=1"));
        assert_eq!(last.installation, Some(id));
        let comment = &s.requests_for("issues/create-comment")[0];
        assert_eq!(comment.body, Some(json!({"body": "hello"})));
        s.clear_requests();
        assert!(s.requests().is_empty());
    })
    .await;
}

// ----- webhooks -------------------------------------------------------------------------

#[test]
fn signature_matches_githubs_published_vector() {
    assert_eq!(
        runbooks_standin::sign(b"It's a Secret to Everybody", b"Hello, World!"),
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

/// What the receiver saw of one delivery.
#[derive(Debug)]
struct Received {
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
}

/// A tiny webhook receiver on a loopback port; deliveries arrive on the channel.
async fn receiver() -> (String, tokio::sync::mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/webhooks/github",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Received { headers, body });
                    (StatusCode::ACCEPTED, "queued")
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("receiver serves");
    });
    (format!("http://{addr}/webhooks/github"), rx)
}

#[tokio::test]
async fn webhooks_are_signed_and_redelivered_like_github() {
    within(async {
        let (s, _) = setup().await;
        let (url, mut rx) = receiver().await;
        let issue = s
            .add_issue(OWNER, REPO, "Upgrade", "body", "alice")
            .expect("issue");
        s.set_permission(OWNER, REPO, "alice", "write");
        let event = s
            .issue_comment_created(
                OWNER,
                REPO,
                issue,
                "/runbook --draft Upgrade React",
                "alice",
            )
            .expect("event");
        let delivery = s.send(&url, &event).await.expect("delivered");
        assert_eq!(delivery.status, 202);
        assert_eq!(delivery.response, "queued");
        let got = rx.recv().await.expect("received");
        let header = |name: &str| {
            got.headers
                .get(name)
                .unwrap_or_else(|| panic!("header {name}"))
                .to_str()
                .expect("ascii")
                .to_string()
        };
        assert_eq!(header("x-github-event"), "issue_comment");
        assert_eq!(header("x-github-delivery"), delivery.id);
        assert_eq!(header("x-github-delivery").len(), 36);
        assert!(header("user-agent").starts_with("GitHub-Hookshot/"));
        assert_eq!(header("content-type"), "application/json");
        assert_eq!(
            header("x-github-hook-installation-target-id"),
            s.app_id().to_string()
        );
        assert_eq!(
            header("x-hub-signature-256"),
            runbooks_standin::sign(s.webhook_secret().as_bytes(), &got.body)
        );
        let payload: Value = serde_json::from_slice(&got.body).expect("json");
        assert_eq!(payload, event.payload);

        let again = s.redeliver(&url, &delivery).await.expect("redelivered");
        assert_eq!(again.id, delivery.id);
        assert!(again.redelivery);
        let got_again = rx.recv().await.expect("received");
        assert_eq!(got_again.body, got.body, "same bytes");
        assert_eq!(got_again.headers["x-github-delivery"], delivery.id.as_str());
        assert_eq!(s.deliveries().len(), 2);

        let ping = s.ping().expect("ping");
        let d = s.send(&url, &ping).await.expect("ping delivered");
        let got = rx.recv().await.expect("received");
        assert_eq!(got.headers["x-github-event"], "ping");
        assert_ne!(d.id, delivery.id);

        // Nothing listening: an error, as GitHub records a failed delivery.
        let (_bound, closed) = crate::support::refusing_address();
        let dead_url = format!("http://{closed}/");
        assert!(s.send(&dead_url, &ping).await.is_err());
    })
    .await;
}

/// Strings of the original deliveries that must not survive the rewrite.
const FOREIGN: [&str; 6] = [
    "Codertocat",
    "Kobzol",
    "Octocoders",
    "bors-kindergarten",
    "Hello-World",
    "api.github.com",
];

fn assert_no_foreign_strings(event: &runbooks_standin::WebhookEvent) {
    let text = event.payload.to_string();
    for foreign in FOREIGN {
        assert!(
            !text.contains(foreign),
            "{} payload leaks {foreign}: {text}",
            event.event
        );
    }
}

#[tokio::test]
async fn payload_helpers_describe_the_stand_ins_state() {
    within(async {
        let (s, id) = setup().await;
        let issue = s
            .add_issue(OWNER, REPO, "Upgrade", "body", "alice")
            .expect("issue");
        let created = s
            .issue_comment_created(OWNER, REPO, issue, "/runbook go", "alice")
            .expect("event");
        let p = &created.payload;
        assert_eq!(p["action"], "created");
        assert_eq!(p["repository"]["full_name"], "acme/widgets");
        assert_eq!(p["installation"]["id"], id);
        assert_eq!(p["sender"]["login"], "alice");
        assert_eq!(p["issue"]["number"], issue);
        assert_eq!(p["comment"]["body"], "/runbook go");
        let comment_id = p["comment"]["id"].as_u64().expect("comment id");
        assert_eq!(
            s.comment(OWNER, REPO, comment_id).expect("stored").body,
            "/runbook go"
        );
        assert_no_foreign_strings(&created);

        // octocrab's webhook models read every event.
        let mut events = vec![created];
        events.push(
            s.issue_comment_edited(OWNER, REPO, comment_id, "/runbook stop", "alice")
                .expect("edited"),
        );
        assert_eq!(events[1].payload["changes"]["body"]["from"], "/runbook go");
        s.push_commit(OWNER, REPO, "feature", &[("f", "1")], "F", "alice")
            .await
            .expect("push");
        let pr = s
            .open_pull(OWNER, REPO, "feature", "main", "Feature", "alice")
            .await
            .expect("pr");
        let on_pr = s
            .issue_comment_created(OWNER, REPO, pr, "/runbook retry", "alice")
            .expect("event");
        assert!(on_pr.payload["issue"]["pull_request"].is_object());
        events.push(on_pr);
        events.push(
            s.pull_request_opened(OWNER, REPO, pr)
                .await
                .expect("opened"),
        );
        s.merge_pull(OWNER, REPO, pr, "alice").await.expect("merge");
        let closed = s
            .pull_request_closed(OWNER, REPO, pr)
            .await
            .expect("closed");
        assert_eq!(closed.payload["pull_request"]["merged"], true);
        events.push(closed);
        events.push(s.installation_created(id).expect("installation"));
        s.create_repo(OWNER, "gadgets", "main", &[("a", "b")])
            .await
            .expect("repo");
        let added = s
            .installation_repositories_added(id, &["gadgets"])
            .expect("added");
        assert_eq!(
            added.payload["repositories_added"][0]["full_name"],
            "acme/gadgets"
        );
        let t = s.create_token(id).expect("token");
        assert_eq!(get(&s, &t, "/repos/acme/gadgets").await.0, StatusCode::OK);
        events.push(added);
        let removed = s
            .installation_repositories_removed(id, &["gadgets"])
            .expect("removed");
        assert_eq!(
            get(&s, &t, "/repos/acme/gadgets").await.0,
            StatusCode::NOT_FOUND
        );
        events.push(removed);
        events.push(
            s.issue_comment_deleted(OWNER, REPO, comment_id, "alice")
                .expect("deleted"),
        );
        assert!(s.comment(OWNER, REPO, comment_id).is_none());
        events.push(s.ping().expect("ping"));
        let deleted = s.installation_deleted(id).expect("deleted");
        assert!(s.installations().is_empty());
        events.push(deleted);

        for event in &events {
            assert_no_foreign_strings(event);
            let body = serde_json::to_vec(&event.payload).expect("json");
            octocrab::models::webhook_events::WebhookEvent::try_from_header_and_body(
                &event.event,
                &body,
            )
            .unwrap_or_else(|e| panic!("octocrab reads {}: {e}", event.event));
        }
        // GitHub's webhook quirk: installation timestamps are epoch numbers.
        let installation = events
            .iter()
            .find(|e| e.event == "installation")
            .expect("installation event");
        assert!(installation.payload["installation"]["created_at"].is_u64());
        assert_eq!(installation.payload["installation"]["app_id"], s.app_id());

        // The raw fixtures are available as well.
        assert_eq!(
            s.payload("ping.none").expect("fixture")["hook"]["type"],
            "Repository"
        );
    })
    .await;
}

#[tokio::test]
async fn wait_until_wakes_on_requests() {
    within(async {
        let (s, id) = setup().await;
        let issue = s.add_issue(OWNER, REPO, "T", "", "alice").expect("issue");
        let crab = installation_client(&s, id);
        let writer = tokio::spawn(async move {
            crab.issues(OWNER, REPO)
                .create_comment(issue, "status")
                .await
                .expect("comment");
        });
        s.wait_until(Duration::from_secs(20), "the status comment", |s| {
            s.comments(OWNER, REPO, issue).len() == 1
        })
        .await
        .expect("comment arrives");
        writer.await.expect("writer");
        let err = s
            .wait_until(
                Duration::from_millis(50),
                "something that never happens",
                |_| false,
            )
            .await
            .expect_err("times out");
        assert!(err.to_string().contains("something that never happens"));
    })
    .await;
}

#[tokio::test]
async fn requests_without_a_user_agent_are_refused_like_github() {
    within(async {
        let (s, id) = setup().await;
        let t = s.create_token(id).expect("token");
        let bare = reqwest::Client::new(); // reqwest sends no User-Agent by default
        let response = bare
            .get(format!("{}/repos/acme/widgets", s.api_url()))
            .bearer_auth(&t)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            response
                .text()
                .await
                .expect("text")
                .contains("make sure your request has a User-Agent header")
        );
        assert_eq!(get(&s, &t, "/repos/acme/widgets").await.0, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn octocrab_retries_once_with_a_fresh_token_after_a_401() {
    within(async {
        let (s, id) = setup().await;
        let crab = installation_client(&s, id);
        crab.repos(OWNER, REPO).get().await.expect("first call");
        s.expire_tokens();
        s.clear_requests();
        crab.repos(OWNER, REPO)
            .get()
            .await
            .expect("octocrab re-mints the token on a 401");
        let seen: Vec<(String, u16)> = s
            .requests()
            .into_iter()
            .map(|r| (r.operation, r.status))
            .collect();
        assert_eq!(
            seen,
            [
                ("repos/get".to_string(), 401),
                ("apps/create-installation-access-token".to_string(), 201),
                ("repos/get".to_string(), 200),
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn contents_and_branch_deletion_through_the_api() {
    within(async {
        let (s, id) = setup().await;
        s.push_commit(
            OWNER,
            REPO,
            "main",
            &[(".github/runbooks.yml", "pr_mode: stacked_pr\ndraft: true\n")],
            "Configure runbooks",
            "alice",
        )
        .await
        .expect("push");
        let crab = installation_client(&s, id);
        let mut items = crab
            .repos(OWNER, REPO)
            .get_content()
            .path(".github/runbooks.yml")
            .send()
            .await
            .expect("content deserializes");
        let file = items.take_items().pop().expect("one item");
        assert_eq!(file.r#type, "file");
        assert_eq!(file.path, ".github/runbooks.yml");
        assert_eq!(
            file.decoded_content().as_deref(),
            Some("pr_mode: stacked_pr\ndraft: true\n")
        );
        let root = crab
            .repos(OWNER, REPO)
            .get_content()
            .send()
            .await
            .expect("root listing");
        let mut names: Vec<&str> = root.items.iter().map(|i| i.name.as_str()).collect();
        names.sort();
        assert_eq!(names, [".github", "README.md", "src"]);

        let t = token(&s, id).await;
        let raw = client()
            .get(format!(
                "{}/repos/acme/widgets/contents/README.md",
                s.api_url()
            ))
            .bearer_auth(&t)
            .header("accept", "application/vnd.github.raw")
            .send()
            .await
            .expect("request");
        assert_eq!(raw.status(), StatusCode::OK);
        assert_eq!(raw.text().await.expect("text"), "# widgets\n");
        assert_eq!(
            get(&s, &t, "/repos/acme/widgets/contents/nope.txt").await.0,
            StatusCode::NOT_FOUND
        );
        let (status, body) = get(&s, &t, "/repos/acme/widgets/contents/README.md?ref=nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["message"], "No commit found for the ref nope");

        // Deleting a branch through the API closes the pull requests on it.
        s.push_commit(OWNER, REPO, "feature", &[("f", "1")], "F", "alice")
            .await
            .expect("push");
        let pr = crab
            .pulls(OWNER, REPO)
            .create("F", "feature", "main")
            .send()
            .await
            .expect("pr");
        let response = client()
            .delete(format!(
                "{}/repos/acme/widgets/git/refs/heads/feature",
                s.api_url()
            ))
            .bearer_auth(&t)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert!(response.bytes().await.expect("body").is_empty());
        assert_eq!(
            s.branch_sha(OWNER, REPO, "feature").await.expect("git"),
            None
        );
        assert!(!s.pull(OWNER, REPO, pr.number).expect("pr").open);
        for (branch, message) in [
            ("feature", "Reference does not exist"),
            ("main", "Cannot delete the default branch"),
        ] {
            let response = client()
                .delete(format!(
                    "{}/repos/acme/widgets/git/refs/heads/{branch}",
                    s.api_url()
                ))
                .bearer_auth(&t)
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["message"], message);
        }
    })
    .await;
}

// ----- token permissions ----------------------------------------------------------------

/// Asks for an installation token with this body; answers the status and the JSON answer.
async fn token_with(s: &StandIn, id: u64, body: Value) -> (StatusCode, Value) {
    let response = client()
        .post(format!(
            "{}/app/installations/{id}/access_tokens",
            s.api_url()
        ))
        .bearer_auth(app_jwt(s))
        .json(&body)
        .send()
        .await
        .expect("token request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A token for `acme/widgets` with only `permissions` (and the `metadata: read` GitHub adds).
async fn narrowed(s: &StandIn, id: u64, permissions: Value) -> String {
    let (status, body) = token_with(
        s,
        id,
        json!({"repositories": [REPO], "permissions": permissions}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["token"].as_str().expect("token").to_string()
}

/// Asserts GitHub's answer to a token without the route's permission: 403, GitHub's message
/// in its error shape, and the permission it wanted in `x-accepted-github-permissions`.
fn assert_not_accessible(
    (status, headers, body): &(StatusCode, reqwest::header::HeaderMap, Value),
    wanted: &str,
) {
    assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["message"], "Resource not accessible by integration");
    assert!(body["documentation_url"].is_string(), "{body}");
    assert_eq!(headers["x-accepted-github-permissions"], wanted);
}

#[tokio::test]
async fn token_permissions_cannot_exceed_the_apps() {
    within(async {
        let (s, id) = setup().await;
        let refused = [
            json!({"administration": "write"}),
            json!({"metadata": "write"}),
            // One permission the app lacks refuses the whole token, not only that entry.
            json!({"issues": "read", "administration": "write"}),
        ];
        for permissions in refused {
            let (status, body) = token_with(&s, id, json!({"permissions": permissions})).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{permissions}");
            assert_eq!(
                body["message"],
                "The permissions requested are not granted to this installation."
            );
            assert!(
                body["documentation_url"]
                    .as_str()
                    .expect("docs")
                    .ends_with("#create-an-installation-access-token-for-an-app")
            );
        }
        let (status, body) =
            token_with(&s, id, json!({"permissions": {"issues": "execute"}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let (status, _) = token_with(&s, id, json!({"permissions": ["issues"]})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

        // A narrowed token's answer shows its own permissions, `metadata: read` added.
        let (status, body) = token_with(
            &s,
            id,
            json!({"repositories": [REPO], "permissions": {"issues": "write", "contents": "read"}}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(
            body["permissions"],
            json!({"contents": "read", "issues": "write", "metadata": "read"})
        );
        assert_eq!(body["repository_selection"], "selected");
        // Without `permissions`, the token holds all of the app's.
        let (_, body) = token_with(&s, id, json!({})).await;
        assert_eq!(body["permissions"]["pull_requests"], "write");
        assert_eq!(body["permissions"]["contents"], "write");
    })
    .await;
}

#[tokio::test]
async fn rest_routes_refuse_a_token_without_their_permission() {
    within(async {
        let (s, id) = setup().await;
        let issue = s
            .add_issue(OWNER, REPO, "Upgrade React", "", "alice")
            .expect("issue");
        s.push_commit(OWNER, REPO, "feature", &[("f", "1")], "Feature", "alice")
            .await
            .expect("push");
        let pr = s
            .open_pull(OWNER, REPO, "feature", "main", "Feature", "alice")
            .await
            .expect("pull request");
        let post = reqwest::Method::POST;
        let patch = reqwest::Method::PATCH;
        let comments = |n: u64| format!("/repos/acme/widgets/issues/{n}/comments");
        let hello = json!({"body": "hello"});

        let issues = narrowed(&s, id, json!({"issues": "write"})).await;
        assert_eq!(
            get(&s, &issues, "/repos/acme/widgets").await.0,
            StatusCode::OK
        );
        let commented = send(&s, &issues, post.clone(), &comments(issue), hello.clone()).await;
        assert_eq!(commented.0, StatusCode::CREATED);
        // GitHub restricts the issue endpoints to issues for a token with only `issues`.
        assert_not_accessible(
            &send(&s, &issues, post.clone(), &comments(pr), hello.clone()).await,
            "pull_requests=write",
        );
        let new_pull = json!({"title": "T", "head": "feature", "base": "main"});
        assert_not_accessible(
            &send(
                &s,
                &issues,
                post.clone(),
                "/repos/acme/widgets/pulls",
                new_pull,
            )
            .await,
            "pull_requests=write",
        );
        let readme = "/repos/acme/widgets/contents/README.md";
        assert_not_accessible(
            &send(&s, &issues, reqwest::Method::GET, readme, Value::Null).await,
            "contents=read",
        );

        // ... and to pull requests for a token with only `pull_requests`.
        let pulls = narrowed(&s, id, json!({"pull_requests": "write"})).await;
        let commented = send(&s, &pulls, post.clone(), &comments(pr), hello.clone()).await;
        assert_eq!(commented.0, StatusCode::CREATED);
        assert_not_accessible(
            &send(&s, &pulls, post.clone(), &comments(issue), hello.clone()).await,
            "issues=write",
        );
        let pull_path = format!("/repos/acme/widgets/pulls/{pr}");
        let retitled = send(&s, &pulls, patch.clone(), &pull_path, json!({"title": "F"})).await;
        assert_eq!(retitled.0, StatusCode::OK);

        // Read is not write.
        let reader = narrowed(&s, id, json!({"pull_requests": "read", "contents": "read"})).await;
        assert_eq!(get(&s, &reader, &pull_path).await.0, StatusCode::OK);
        assert_eq!(get(&s, &reader, readme).await.0, StatusCode::OK);
        assert_not_accessible(
            &send(&s, &reader, patch, &pull_path, json!({"title": "G"})).await,
            "pull_requests=write",
        );
        assert_eq!(s.pull(OWNER, REPO, pr).expect("pr").title, "F");

        // A repository outside the token's scope stays GitHub's 404, permission or not.
        s.create_repo(OWNER, "gadgets", "main", &[("a", "b")])
            .await
            .expect("repo");
        s.add_repos(id, &["gadgets"]);
        let gadgets = s
            .add_issue(OWNER, "gadgets", "Other", "", "alice")
            .expect("issue");
        let elsewhere = format!("/repos/acme/gadgets/issues/{gadgets}/comments");
        for t in [&issues, &pulls] {
            let answer = send(&s, t, post.clone(), &elsewhere, hello.clone()).await;
            assert_eq!(answer.0, StatusCode::NOT_FOUND);
        }

        // Refusals are logged like any request, with the operation id.
        let refused: Vec<u16> = s
            .requests_for("pulls/create")
            .iter()
            .map(|r| r.status)
            .collect();
        assert_eq!(refused, [403]);
        assert_eq!(s.comments(OWNER, REPO, issue).len(), 1);
        assert_eq!(s.comments(OWNER, REPO, pr).len(), 1);
    })
    .await;
}

#[tokio::test]
async fn graphql_refuses_a_token_without_pull_requests_write() {
    within(async {
        let (s, id) = setup().await;
        s.push_commit(OWNER, REPO, "feature", &[("f", "1")], "Feature", "alice")
            .await
            .expect("push");
        let crab = installation_client(&s, id);
        let pr = crab
            .pulls(OWNER, REPO)
            .create("[WIP] F", "feature", "main")
            .draft(true)
            .send()
            .await
            .expect("draft PR");
        let node = pr.node_id.expect("node id");
        let ready = |t: String| {
            let url = s.graphql_url();
            let node = node.clone();
            async move {
                let response = client()
                    .post(url)
                    .bearer_auth(t)
                    .json(&json!({
                        "query": "mutation($id: ID!) {\n  markPullRequestReadyForReview(input: {pullRequestId: $id}) { pullRequest { isDraft } }\n}",
                        "variables": {"id": node},
                    }))
                    .send()
                    .await
                    .expect("request");
                assert_eq!(response.status(), StatusCode::OK, "GraphQL errors come with a 200");
                response.json::<Value>().await.expect("json")
            }
        };
        for permissions in [
            json!({"contents": "write", "issues": "write"}),
            json!({"pull_requests": "read"}),
        ] {
            let answer = ready(narrowed(&s, id, permissions).await).await;
            assert_eq!(
                answer,
                json!({
                    "data": {"markPullRequestReadyForReview": null},
                    "errors": [{
                        "type": "FORBIDDEN",
                        "path": ["markPullRequestReadyForReview"],
                        "locations": [{"line": 2, "column": 3}],
                        "message": "Resource not accessible by integration",
                    }],
                })
            );
            assert!(s.pull(OWNER, REPO, pr.number).expect("pr").draft, "unchanged");
        }
        let answer = ready(narrowed(&s, id, json!({"pull_requests": "write"})).await).await;
        assert_eq!(
            answer,
            json!({"data": {"markPullRequestReadyForReview": {"pullRequest": {"isDraft": false}}}})
        );
        assert!(!s.pull(OWNER, REPO, pr.number).expect("pr").draft);
    })
    .await;
}

#[tokio::test]
async fn git_refuses_a_token_without_contents_permission() {
    within(async {
        let (s, id) = setup().await;
        let url = s.clone_url(OWNER, REPO);
        let advertise = |t: String, service: &'static str| {
            let url = url.clone();
            async move {
                let response = client()
                    .get(format!("{url}/info/refs?service={service}"))
                    .basic_auth("x-access-token", Some(t))
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                (status, response.text().await.expect("text"))
            }
        };
        let bot = s.bot_login();
        let denied = format!("Permission to acme/widgets.git denied to {bot}.\n");

        // `contents: read` fetches but does not push.
        let reader = narrowed(&s, id, json!({"contents": "read"})).await;
        let (status, _) = advertise(reader.clone(), "git-upload-pack").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            advertise(reader.clone(), "git-receive-pack").await,
            (StatusCode::FORBIDDEN, denied.clone())
        );
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path().to_path_buf();
        let (u, header) = (url.clone(), basic_header(&reader));
        let pushed = blocking(move || {
            git_ok(&h, &h, &["-c", &header, "clone", "-q", &u, "work"]);
            let work = h.join("work");
            std::fs::write(work.join("new.txt"), "new\n").expect("write");
            git_ok(&h, &work, &["checkout", "-q", "-b", "runbook/1"]);
            git_ok(&h, &work, &["add", "new.txt"]);
            git_ok(&h, &work, &["commit", "-q", "-m", "Step 1"]);
            git(
                &h,
                &work,
                &["-c", &header, "push", "-q", "origin", "runbook/1"],
            )
        })
        .await;
        assert!(!pushed.status.success());
        let stderr = String::from_utf8_lossy(&pushed.stderr);
        assert!(stderr.contains(denied.trim()), "{stderr}");
        assert_eq!(
            s.branch_sha(OWNER, REPO, "runbook/1").await.expect("git"),
            None
        );

        // A token without `contents` cannot even fetch.
        let commenter =
            narrowed(&s, id, json!({"issues": "write", "pull_requests": "write"})).await;
        assert_eq!(
            advertise(commenter, "git-upload-pack").await,
            (StatusCode::FORBIDDEN, denied)
        );

        // `contents: write` does both.
        let writer = narrowed(&s, id, json!({"contents": "write"})).await;
        for service in ["git-upload-pack", "git-receive-pack"] {
            assert_eq!(advertise(writer.clone(), service).await.0, StatusCode::OK);
        }
    })
    .await;
}

/// A transferred repository answers as its new owner's, and its old name keeps working by
/// redirects, as on GitHub: `301` to `/repositories/{id}/…` (path tail and query kept) for
/// reads, `307` for writes; octocrab follows them. A new repository under the old name ends
/// the redirects.
#[tokio::test]
async fn a_transferred_repository_redirects_from_its_old_name() {
    within(async {
        let (s, _) = setup().await;
        s.transfer_repo(OWNER, REPO, "globex")
            .await
            .expect("transferred");
        let globex = s.install("globex", &[REPO]);
        let token = token(&s, globex).await;
        let raw = reqwest::Client::builder()
            .user_agent("runbooks-standin-tests")
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let old = |path: &str| format!("{}/repos/{OWNER}/{REPO}{path}", s.api_url());

        let (status, repo) = get(&s, &token, &format!("/repos/{OWNER}/{REPO}")).await;
        assert_eq!(status, StatusCode::OK, "{repo}");
        assert_eq!(repo["full_name"], "globex/widgets");
        assert_eq!(repo["owner"]["login"], "globex");
        assert_eq!(
            repo["clone_url"],
            format!("{}/git/globex/widgets.git", s.api_url())
        );
        let by_id = format!("{}/repositories/{}", s.api_url(), repo["id"]);

        let answer = raw.get(old("")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(answer.headers()["location"], by_id.as_str());
        let body: Value = answer.json().await.unwrap();
        assert_eq!(body["message"], "Moved Permanently");
        assert_eq!(body["url"], by_id.as_str());
        let answer = raw
            .get(old("/pulls?state=all"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            answer.headers()["location"],
            format!("{by_id}/pulls?state=all").as_str()
        );
        let answer = raw
            .post(old("/pulls"))
            .bearer_auth(&token)
            .json(&json!({"title": "t", "head": "x", "base": "main"}))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::TEMPORARY_REDIRECT);
        assert_eq!(
            answer.headers()["location"],
            format!("{by_id}/pulls").as_str()
        );

        // The app's own client follows, for the installation (as the app) and the repository.
        let installation = app_client(&s)
            .apps()
            .get_repository_installation(OWNER, REPO)
            .await
            .expect("the installation, through the redirect");
        assert_eq!(installation.id.0, globex);
        let crab = installation_client(&s, globex);
        let followed = crab.repos(OWNER, REPO).get().await.expect("the repository");
        assert_eq!(followed.full_name.as_deref(), Some("globex/widgets"));

        s.create_repo(OWNER, REPO, "main", &[("README.md", "# new\n")])
            .await
            .expect("a new repository under the old name");
        let answer = raw.get(old("")).bearer_auth(&token).send().await.unwrap();
        assert_eq!(
            answer.status(),
            StatusCode::NOT_FOUND,
            "no redirect: acme/widgets is another repository, which globex's token cannot see"
        );
    })
    .await;
}
