//! Runbooks from `/runbook …` comments: real `issue_comment` payloads, signed and delivered
//! to the running server by the GitHub stand-in, which is also the GitHub the app answers on.

use crate::support;
use crate::support::rn;

use std::time::{Duration, Instant};

use runbooks::domain::RunbookStatus;
use runbooks_standin::{Delivery, StandIn};
use serde_json::Value;
use support::{Backend, TestServer, server_for, wait_for_status};

const LIB: &str = "pub fn old_name() -> u32 {\n    1\n}\n";

const RENAME: &str = r#"/runbook --draft Rename the helper.

## Execution Steps
### Step 1: Rename the definition
```sh
sed -i 's/old_name/new_name/' src/lib.rs
```
### Step 2: Document it
```sh
echo "Call new_name()." >> README.md
```
"#;

const WAIT: Duration = Duration::from_secs(60);

struct Setup {
    github: StandIn,
    t: TestServer,
    hook: String,
}

async fn setup(backend: Backend) -> Setup {
    let github =
        support::github_with_backend(&[("src/lib.rs", LIB), ("README.md", "# backend\n")]).await;
    github.set_permission("acme-corp", "backend", "alice", "write");
    github.set_permission("acme-corp", "backend", "mallory", "read");
    let t = server_for(&github, backend, |_| {}).await;
    let hook = t.url("/webhooks/github");
    Setup { github, t, hook }
}

impl Setup {
    fn issue(&self, title: &str, body: &str) -> u64 {
        self.github
            .add_issue("acme-corp", "backend", title, body, "alice")
            .unwrap()
    }

    /// `author` comments `body` on the thread; answers the comment id and the delivery.
    async fn comment(&self, issue: u64, body: &str, author: &str) -> (u64, Delivery) {
        let event = self
            .github
            .issue_comment_created("acme-corp", "backend", issue, body, author)
            .unwrap();
        let id = event.payload["comment"]["id"].as_u64().unwrap();
        let delivery = self.github.send(&self.hook, &event).await.unwrap();
        assert_eq!(delivery.status, 202, "{}", delivery.response);
        (id, delivery)
    }

    /// The app's comments in a thread.
    fn app_comments(&self, issue: u64) -> Vec<runbooks_standin::CommentInfo> {
        let bot = self.github.bot_login();
        self.github
            .comments("acme-corp", "backend", issue)
            .into_iter()
            .filter(|c| c.author == bot)
            .collect()
    }

    /// Waits until the app's comments in the thread satisfy `done`.
    async fn wait_for_comments(
        &self,
        issue: u64,
        what: &str,
        done: impl Fn(&[runbooks_standin::CommentInfo]) -> bool,
    ) -> Vec<runbooks_standin::CommentInfo> {
        let bot = self.github.bot_login();
        let result = self
            .github
            .wait_until(WAIT, what, |g| {
                let mine: Vec<_> = g
                    .comments("acme-corp", "backend", issue)
                    .into_iter()
                    .filter(|c| c.author == bot)
                    .collect();
                done(&mine)
            })
            .await;
        let mine = self.app_comments(issue);
        result.unwrap_or_else(|e| panic!("{e}; the app's comments: {mine:#?}"));
        mine
    }

    /// Waits until the comment has the app's `eyes` reaction.
    async fn wait_for_eyes(&self, comment: u64) {
        let bot = self.github.bot_login();
        self.github
            .wait_until(WAIT, "the eyes reaction", |g| {
                g.reactions("acme-corp", "backend", comment)
                    .iter()
                    .any(|r| r.user == bot && r.content == "eyes")
            })
            .await
            .unwrap();
    }

    /// Waits until every delivery the server received has been handled.
    async fn wait_for_intake(&self) {
        self.t.until_handled(WAIT).await;
    }

    async fn runbook_exists(&self, number: i64) -> bool {
        self.t.api().runbook(number).await.is_ok()
    }
}

fn status_of(body: &str) -> bool {
    body.starts_with("<!-- runbooks:status runbook=")
}

both_backends!(a_comment_starts_a_runbook_whose_status_comment_ends_with_the_pr_link);
async fn a_comment_starts_a_runbook_whose_status_comment_ends_with_the_pr_link(backend: Backend) {
    let s = setup(backend).await;
    let issue = s.issue("Rename old_name", "The helper's name is misleading.");
    let (comment, _) = s.comment(issue, RENAME, "alice").await;
    s.wait_for_eyes(comment).await;
    let doc = wait_for_status(&s.t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(doc.status, RunbookStatus::Completed, "{doc:?}");
    let pr = doc.pull_requests[0].url.clone();
    let pr_number = doc.pull_requests[0].number;
    // One status comment, edited until it shows the outcome and ends with the PR link.
    let comments = s
        .wait_for_comments(issue, "the final status", |c| {
            c.len() == 1 && c[0].body.contains("**Completed**") && c[0].body.contains(&pr)
        })
        .await;
    let body = &comments[0].body;
    assert!(status_of(body), "{body}");
    assert!(body.contains("✅ **1** Rename the definition"), "{body}");
    assert!(body.contains("✅ **2** Document it"), "{body}");
    assert!(body.contains("requested by @alice"), "{body}");
    assert!(body.contains(&format!("{}/runbooks/1", s.t.base)), "{body}");
    // The footer says what the steps used, as the API records it; no tokens without a model.
    let used: runbooks::domain::Usage =
        s.t.api()
            .steps(1)
            .await
            .expect("the steps")
            .iter()
            .filter_map(|step| step.usage)
            .map(|u| runbooks::domain::Usage {
                wall_ms: u.wall_ms,
                agent_cpu_ms: u.agent_cpu_ms,
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            })
            .sum();
    assert!(used.wall_ms > 0);
    assert!(
        body.contains(&format!(
            "requested by @alice · Used {}</sub>",
            used.summary()
        )),
        "{body}"
    );
    assert!(!body.contains("tokens"), "{body}");
    // `--draft` reached the pull request, and the work is on it.
    let pull = s.github.pull("acme-corp", "backend", pr_number).unwrap();
    assert!(pull.draft);
    assert!(
        s.github
            .file("acme-corp", "backend", "runbooks/1", "src/lib.rs")
            .await
            .unwrap()
            .unwrap()
            .contains("new_name")
    );
    s.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_comment_starts_a_runbook_with_the_thread_as_context() {
    let s = setup(Backend::Sqlite).await;
    s.github
        .push_commit(
            "acme-corp",
            "backend",
            "feature",
            &[("NOTES.md", "notes\n")],
            "Add notes",
            "alice",
        )
        .await
        .unwrap();
    let pr = s
        .github
        .open_pull(
            "acme-corp",
            "backend",
            "feature",
            "main",
            "Add notes",
            "alice",
        )
        .await
        .unwrap();
    let (comment, delivery) = s.comment(pr, RENAME, "alice").await;
    // The real shape of a pull-request comment (bors' payload) was sent.
    let sent: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert!(sent["issue"]["pull_request"].is_object());
    s.wait_for_eyes(comment).await;
    let doc = wait_for_status(&s.t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(doc.status, RunbookStatus::Completed, "{doc:?}");
    let thread = s.t.store.thread(rn(1)).await.unwrap().unwrap();
    assert!(thread.thread.is_pull_request);
    assert_eq!(thread.thread.issue_number, pr);
    assert_eq!(thread.thread.requested_by, "alice");
    assert!(
        thread.thread.url.ends_with(&format!("/pull/{pr}")),
        "{}",
        thread.thread.url
    );
    assert_eq!(
        thread.thread.context.as_deref(),
        Some(format!("Pull request #{pr}: Add notes").as_str())
    );
    s.wait_for_comments(pr, "the final status", |c| {
        c.len() == 1 && c[0].body.contains("**Completed**")
    })
    .await;
    s.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_users_are_refused_politely_and_nothing_runs() {
    let s = setup(Backend::Sqlite).await;
    let issue = s.issue("Rename", "");
    let (comment, _) = s.comment(issue, RENAME, "mallory").await;
    s.wait_for_eyes(comment).await;
    let comments = s
        .wait_for_comments(issue, "a refusal", |c| !c.is_empty())
        .await;
    assert_eq!(comments.len(), 1);
    let body = &comments[0].body;
    assert!(body.contains("@mallory"), "{body}");
    assert!(body.contains("only people with write access"), "{body}");
    // Someone who is not a collaborator at all is refused the same way.
    let (_, _) = s.comment(issue, "/runbook retry", "stranger").await;
    s.wait_for_comments(issue, "a second refusal", |c| c.len() == 2)
        .await;
    s.wait_for_intake().await;
    assert!(!s.runbook_exists(1).await);
    assert!(s.github.requests_for("pulls/create").is_empty());
    s.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_and_the_app_itself_are_ignored() {
    let s = setup(Backend::Sqlite).await;
    let issue = s.issue("Rename", "");
    s.github
        .set_permission("acme-corp", "backend", "renovate[bot]", "write");
    let (from_bot, _) = s.comment(issue, RENAME, "renovate[bot]").await;
    let bot = s.github.bot_login();
    let (from_app, _) = s.comment(issue, RENAME, &bot).await;
    s.wait_for_intake().await;
    // No reaction, no reply, no runbook, and GitHub was not even asked who they are.
    for comment in [from_bot, from_app] {
        assert!(
            s.github
                .reactions("acme-corp", "backend", comment)
                .is_empty()
        );
    }
    assert_eq!(
        s.app_comments(issue).len(),
        1,
        "only the test's own app comment"
    );
    assert!(!s.runbook_exists(1).await);
    assert!(
        s.github
            .requests_for("repos/get-collaborator-permission-level")
            .is_empty()
    );
    s.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mistakes_get_the_usage_and_plain_comments_get_nothing() {
    let s = setup(Backend::Sqlite).await;
    let issue = s.issue("Upgrade", "");
    // Not commands: quoted, in a code block, or not at the start of a line.
    s.comment(issue, "> /runbook Upgrade React", "alice").await;
    s.comment(issue, "```\n/runbook Upgrade React\n```", "alice")
        .await;
    s.comment(issue, "Try /runbook Upgrade React", "alice")
        .await;
    s.wait_for_intake().await;
    assert!(s.app_comments(issue).is_empty());
    assert!(
        s.github
            .requests_for("reactions/create-for-issue-comment")
            .is_empty()
    );

    let (comment, _) = s
        .comment(issue, "/runbook --stack Upgrade React", "alice")
        .await;
    s.wait_for_eyes(comment).await;
    let comments = s
        .wait_for_comments(issue, "the usage", |c| c.len() == 1)
        .await;
    let body = &comments[0].body;
    assert!(body.contains("@alice"), "{body}");
    assert!(body.contains("`--stack`"), "{body}");
    assert!(body.contains("did you mean `--stacked`"), "{body}");
    assert!(body.contains("--target"), "the usage is shown: {body}");

    s.comment(issue, "/runbook retyr", "alice").await;
    let comments = s
        .wait_for_comments(issue, "a did-you-mean", |c| c.len() == 2)
        .await;
    assert!(
        comments[1].body.contains("/runbook retry"),
        "{}",
        comments[1].body
    );

    // Nothing to do: no prompt, and the issue has no body.
    s.comment(issue, "/runbook --draft", "alice").await;
    let comments = s
        .wait_for_comments(issue, "nothing to do", |c| c.len() == 3)
        .await;
    assert!(comments[2].body.contains("@alice"), "{}", comments[2].body);
    assert!(!s.runbook_exists(1).await);
    s.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_or_repeated_webhook_starts_one_runbook() {
    let s = setup(Backend::Sqlite).await;
    let issue = s.issue("Rename", "");
    let event = s
        .github
        .issue_comment_created("acme-corp", "backend", issue, RENAME, "alice")
        .unwrap();
    let first = s.github.send(&s.hook, &event).await.unwrap();
    // GitHub's "Redeliver": the same delivery id.
    let again = s.github.redeliver(&s.hook, &first).await.unwrap();
    assert_eq!(again.status, 200, "{}", again.response);
    // The same comment under a new delivery id (as after a crash mid-handling): the comment
    // id says it started a runbook already.
    let other = s.github.send(&s.hook, &event).await.unwrap();
    assert_eq!(other.status, 202);
    s.wait_for_intake().await;
    wait_for_status(&s.t, 1, &[RunbookStatus::Completed]).await;
    s.wait_for_comments(issue, "the final status", |c| {
        c.iter().any(|c| c.body.contains("**Completed**"))
    })
    .await;
    assert!(!s.runbook_exists(2).await);
    assert_eq!(
        s.app_comments(issue).len(),
        1,
        "{:#?}",
        s.app_comments(issue)
    );
    assert_eq!(s.github.requests_for("pulls/create").len(), 1);
    // Edited and deleted comments start nothing.
    let edited = s
        .github
        .issue_comment_edited(
            "acme-corp",
            "backend",
            event.payload["comment"]["id"].as_u64().unwrap(),
            RENAME,
            "alice",
        )
        .unwrap();
    s.github.send(&s.hook, &edited).await.unwrap();
    s.wait_for_intake().await;
    assert!(!s.runbook_exists(2).await);
    s.t.stop().await;
}

const TWO_STEPS_THEN_FAIL: &str = r#"/runbook --plan --stacked
## Execution Steps
### Step 1: Add a
```sh
echo a > a.txt
```
### Step 2: Add b
```sh
echo b > b.txt
```
### Step 3: Break
```sh
echo "this step is broken" >&2
exit 3
```
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_status_retry_and_cancel_act_on_the_threads_latest_runbook() {
    let s = setup(Backend::Sqlite).await;
    let issue = s.issue("Letters", "");
    // Before any runbook: a helpful answer.
    s.comment(issue, "/runbook execute", "alice").await;
    let comments = s
        .wait_for_comments(issue, "no runbook", |c| c.len() == 1)
        .await;
    assert!(
        comments[0].body.contains("no runbook has been started"),
        "{}",
        comments[0].body
    );

    s.comment(issue, TWO_STEPS_THEN_FAIL, "alice").await;
    wait_for_status(&s.t, 1, &[RunbookStatus::NotStarted]).await;
    let comments = s
        .wait_for_comments(issue, "the plan", |c| {
            c.len() == 2 && c[1].body.contains("The plan is ready")
        })
        .await;
    let status_comment = comments[1].id;

    s.comment(issue, "/runbook execute 1", "alice").await;
    wait_for_status(&s.t, 1, &[RunbookStatus::PartiallyCompleted]).await;
    s.wait_for_comments(issue, "paused", |c| {
        c.iter()
            .any(|c| c.id == status_comment && c.body.contains("**Paused** (1 of 3"))
    })
    .await;

    s.comment(issue, "/runbook status", "alice").await;
    let comments = s
        .wait_for_comments(issue, "a status reply", |c| c.len() == 3)
        .await;
    let reply = &comments[2].body;
    assert!(
        reply.contains("is **partially_completed**: 1 of 3 steps completed"),
        "{reply}"
    );
    assert!(
        reply.contains("#issuecomment-"),
        "links the status comment: {reply}"
    );

    s.comment(issue, "/runbook execute", "alice").await;
    wait_for_status(&s.t, 1, &[RunbookStatus::Failed]).await;
    let comments = s
        .wait_for_comments(issue, "the failure", |c| {
            c.iter()
                .any(|c| c.id == status_comment && c.body.contains("this step is broken"))
        })
        .await;
    let body = &comments
        .iter()
        .find(|c| c.id == status_comment)
        .unwrap()
        .body;
    assert!(body.contains("**Failed** (2 of 3 steps done)"), "{body}");
    assert!(body.contains("Step **3** failed"), "{body}");
    assert!(body.contains("/runbook retry"), "{body}");
    // Stacked: one PR per top-level step with changes, both linked.
    assert!(body.contains("Pull requests:"), "{body}");

    // Retry runs the failed step again (it fails again: still broken).
    let started = |steps: &[runbooks::store::StepRecord]| {
        steps
            .iter()
            .find(|st| st.number.to_string() == "3")
            .unwrap()
            .started_at_ms
    };
    let before = started(&s.t.store.steps(rn(1)).await.unwrap());
    let (retry, _) = s.comment(issue, "/runbook retry", "alice").await;
    s.wait_for_eyes(retry).await;
    s.wait_for_intake().await;
    let mut progress = s.t.watch(1, WAIT);
    loop {
        let steps = s.t.store.steps(rn(1)).await.unwrap();
        let step = steps
            .iter()
            .find(|st| st.number.to_string() == "3")
            .unwrap();
        if started(&steps) > before && step.state == runbooks::domain::StepState::Failed {
            break;
        }
        assert!(progress.next().await, "step 3 never ran again: {step:?}");
    }
    // Cancel on a runbook with nothing running is accepted quietly.
    s.comment(issue, "/runbook cancel", "alice").await;
    s.wait_for_intake().await;
    // Execute when nothing is left to run: the reason is the reply.
    let (done, _) = s.comment(issue, "/runbook execute 1", "alice").await;
    s.wait_for_eyes(done).await;
    let comments = s
        .wait_for_comments(issue, "a conflict reply", |c| {
            c.iter().any(|c| c.body.contains("no unfinished steps"))
        })
        .await;
    assert_eq!(
        comments.iter().filter(|c| status_of(&c.body)).count(),
        1,
        "one status comment: {comments:#?}"
    );
    s.t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_step_runbook_edits_its_status_comment_a_bounded_number_of_times() {
    let s = setup(Backend::Sqlite).await;
    let issue = s.issue("Ten files", "");
    let mut body = String::from("/runbook Ten files\n\n## Execution Steps\n");
    for i in 1..=10 {
        body.push_str(&format!(
            "### Step {i}: File {i}\n```sh\necho {i} > f{i}.txt\n```\n"
        ));
    }
    let started = Instant::now();
    s.comment(issue, &body, "alice").await;
    wait_for_status(&s.t, 1, &[RunbookStatus::Completed]).await;
    s.wait_for_comments(issue, "the final status", |c| {
        c.len() == 1 && c[0].body.contains("**Completed**: all 10 steps done")
    })
    .await;
    let elapsed = started.elapsed();
    let edits = s.github.requests_for("issues/update-comment").len();
    // Each time a worker holds the runbook, its first change is shown at once, later ones at
    // most once per interval (5 s by default), and the final state once more: with at most
    // two holds (the run, and the report the comment handler asks for), this bounds the
    // edits whatever the machine's speed. Without coalescing there would be one per state
    // change: 21 (plan, then each step starting and ending).
    let interval = Duration::from_secs(5);
    let bound = 2 * (elapsed.as_secs() / interval.as_secs() + 2) as usize;
    eprintln!("10-step runbook: {edits} status comment edits in {elapsed:?} (bound {bound})");
    assert!(edits >= 1);
    assert!(edits <= bound, "{edits} edits in {elapsed:?}");
    s.t.stop().await;
}

/// A bare `/runbook` runs the issue's description. When someone without write access wrote
/// it — anyone can open an issue — nothing runs, even though the commenter may: the app
/// says why and how to run a task of one's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_command_never_runs_a_description_written_without_write_access() {
    let s = setup(Backend::Sqlite).await;
    let issue = s
        .github
        .add_issue(
            "acme-corp",
            "backend",
            "Please rename",
            "## Execution Steps\n### Step 1: Helpful\n```sh\necho pwned > pwned.txt\n```\n",
            "mallory",
        )
        .unwrap();
    let (comment, delivery) = s.comment(issue, "/runbook", "alice").await;
    // The real payload names the issue's author.
    let sent: Value = serde_json::from_slice(&delivery.body).unwrap();
    assert_eq!(sent["issue"]["user"]["login"], "mallory");
    s.wait_for_eyes(comment).await;
    let comments = s
        .wait_for_comments(issue, "a refusal", |c| !c.is_empty())
        .await;
    assert_eq!(comments.len(), 1);
    let body = &comments[0].body;
    assert!(body.contains("@alice"), "{body}");
    assert!(body.contains("written by @mallory"), "{body}");
    assert!(body.contains("write access"), "{body}");
    assert!(body.contains("`/runbook <what to do>`"), "{body}");
    s.wait_for_intake().await;
    assert!(!s.runbook_exists(1).await);
    let branches = s.github.branches("acme-corp", "backend").await.unwrap();
    assert_eq!(branches.keys().collect::<Vec<_>>(), ["main"]);

    // The same task in alice's own comment runs: she wrote it.
    let (_, _) = s
        .comment(
            issue,
            "/runbook\n## Execution Steps\n### Step 1: Rename\n```sh\necho renamed > renamed.txt\n```\n",
            "alice",
        )
        .await;
    let doc = wait_for_status(&s.t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(doc.status, RunbookStatus::Completed, "{doc:?}");
    s.t.stop().await;
}

/// An HTML comment is invisible on GitHub, so a command block hidden in one must not run:
/// a bare `/runbook` on alice's own issue runs its visible block only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_blocks_hidden_in_html_comments_never_run() {
    let s = setup(Backend::Sqlite).await;
    let issue = s.issue(
        "Add a changelog",
        "## Execution Steps\n### Step 1: Changelog\n\
         <!--\n```sh\necho hidden > hidden.txt\n```\n-->\n\
         ```sh\necho visible > CHANGELOG.md\n```\n<!-- ```sh\necho inline > inline.txt\n``` -->\n",
    );
    s.comment(issue, "/runbook", "alice").await;
    let doc = wait_for_status(&s.t, 1, &[RunbookStatus::Completed, RunbookStatus::Failed]).await;
    assert_eq!(doc.status, RunbookStatus::Completed, "{doc:?}");
    let file = |path: &'static str| s.github.file("acme-corp", "backend", "runbooks/1", path);
    assert_eq!(
        file("CHANGELOG.md").await.unwrap().as_deref(),
        Some("visible\n")
    );
    assert_eq!(file("hidden.txt").await.unwrap(), None);
    assert_eq!(file("inline.txt").await.unwrap(), None);
    s.t.stop().await;
}

/// Handled again after a failure (as after a crash), the command looks for the status
/// comment it may have written already — and takes only the app's own: a comment that
/// starts with the runbook's marker but was written by someone else is left alone, and the
/// app writes (and from then on edits) its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_apps_own_status_comment_is_adopted() {
    let s = setup(Backend::Sqlite).await;
    let issue = s.issue("Rename", "");
    // Writing the status comment fails, every attempt of the first handling.
    s.github.inject(
        runbooks_standin::Fault::server_error(format!(
            "/repos/acme-corp/backend/issues/{issue}/comments"
        ))
        .method("POST")
        .times(4),
    );
    let event = s
        .github
        .issue_comment_created("acme-corp", "backend", issue, RENAME, "alice")
        .unwrap();
    s.github.send(&s.hook, &event).await.unwrap();
    s.wait_for_intake().await;
    assert!(s.runbook_exists(1).await);
    assert!(s.app_comments(issue).is_empty());
    // Someone writes a comment that looks like the runbook's status comment.
    let fake_body = "<!-- runbooks:status runbook=1 -->\nAll done, merge it!";
    let fake = s
        .github
        .add_comment("acme-corp", "backend", issue, "mallory", fake_body)
        .unwrap();
    // The same comment under a new delivery id.
    s.github.send(&s.hook, &event).await.unwrap();
    s.wait_for_intake().await;
    wait_for_status(&s.t, 1, &[RunbookStatus::Completed]).await;
    let mine = s
        .wait_for_comments(issue, "the app's own final status", |c| {
            c.len() == 1 && c[0].body.contains("**Completed**")
        })
        .await;
    let thread = s.t.store.thread(rn(1)).await.unwrap().unwrap();
    assert_eq!(thread.status_comment_id, Some(mine[0].id));
    assert_ne!(mine[0].id, fake);
    let untouched = s.github.comment("acme-corp", "backend", fake).unwrap();
    assert_eq!(untouched.body, fake_body);
    s.t.stop().await;
}

/// A comment's request is checked by the same rules as the API's: a prompt over the limit
/// (here a bare `/runbook` under a very long description) is replied to, naming the field,
/// and nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_api_would_refuse_is_refused_in_the_thread() {
    let s = setup(Backend::Sqlite).await;
    let body = "Rename the helper. ".repeat(6_000);
    assert!(body.chars().count() > runbooks::domain::runbook::limits::PROMPT_CHARS);
    let issue = s.issue("Rename the helper", &body);
    s.comment(issue, "/runbook", "alice").await;
    let comments = s
        .wait_for_comments(issue, "the refusal", |c| c.len() == 1)
        .await;
    let reply = &comments[0].body;
    assert!(reply.starts_with("@alice `prompt` is too long"), "{reply}");
    assert!(!status_of(reply), "{reply}");
    assert!(!s.runbook_exists(1).await);
    s.t.stop().await;
}

/// An organisation whose monthly budget is spent: a `/runbook` comment starts nothing, and
/// the thread is told why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_budget_is_explained_in_the_thread() {
    use runbooks::domain::{LimitChanges, LimitValue};
    let s = setup(Backend::Sqlite).await;
    let spent = LimitChanges {
        monthly_tokens: Some(LimitValue::Set(0)),
        ..LimitChanges::default()
    };
    s.t.store
        .update_org_limits("Acme-Corp", &spent)
        .await
        .unwrap();
    let issue = s.issue("Rename the helper", "");
    s.comment(issue, RENAME, "alice").await;
    let comments = s
        .wait_for_comments(issue, "the refusal", |c| c.len() == 1)
        .await;
    let reply = &comments[0].body;
    assert!(
        reply.starts_with(
            "@alice nothing was started: the organisation acme-corp's monthly budget of 0 \
             model tokens is spent (0 used this month); raise it with `runbooks org set \
             acme-corp --monthly-tokens …` and retry."
        ),
        "{reply}"
    );
    assert!(!status_of(reply), "{reply}");
    assert!(!s.runbook_exists(1).await);
    s.t.stop().await;
}
