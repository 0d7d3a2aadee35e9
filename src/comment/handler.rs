//! Acting on `/runbook …` comments: who may, what runs, and what the app answers.
//!
//! A comment without a command costs nothing (no call to GitHub). A command is acknowledged
//! with an `eyes` reaction at once; then the author's permission is checked, and only then
//! is the command read for mistakes and carried out. Replies are for what a person must
//! know (a refusal, a mistake, a state that does not allow the command); progress goes to
//! the one status comment per runbook, which the engine keeps up to date.

use crate::domain::runbook::title_from_prompt;
use crate::domain::{RunbookNumber, RunbookRequest, status};
use crate::engine::{Engine, EngineError};
use crate::github::issues::Permission;
use crate::github::webhook::IssueComment;
use crate::github::{GitHubError, RepoInfo, Resolution};
use crate::ops::{Action, Actor, App, OpError};
use crate::status_comment::marker;
use crate::store::{NewThread, StoreError};

use super::command::{self, Command, CommandError, StartOptions};

/// Why a command could not be carried out: the operator's to read (the database or GitHub
/// failing), never a reply — what the commenter must know is answered in the thread.
#[derive(Debug, thiserror::Error)]
pub enum CommentError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    App(#[from] OpError),
    #[error("runbook {0} vanished while its comment was handled")]
    Vanished(RunbookNumber),
}

/// Handles an `issue_comment` delivery.
pub async fn handle(app: &App, engine: &Engine, event: &IssueComment) -> Result<(), CommentError> {
    if event.action != "created" {
        // Edited and deleted comments start nothing.
        return Ok(());
    }
    if event.by_bot {
        // Bots, this app included, are never obeyed: the app never answers itself.
        return Ok(());
    }
    let Some(parsed) = command::parse(&event.body) else {
        return Ok(());
    };
    let asked = &event.repository;
    let repo = match engine.github().resolve(asked.owner(), asked.name()).await? {
        Resolution::Found(repo) => repo,
        Resolution::NotInstalled => {
            tracing::warn!(repository = %event.repository, "a /runbook comment where the app is not installed");
            return Ok(());
        }
    };
    let github = engine.github();
    if let Err(e) = github.react(&repo, event.comment_id, "eyes").await {
        tracing::warn!(comment = event.comment_id, error = %e, "no reaction to a command");
    }
    let permission = github.permission(&repo, &event.author).await?;
    let reply = match permission {
        Permission::ReadOnly => Some(format!(
            "Sorry @{}, only people with write access to {} can run runbooks here, so \
             nothing was started.",
            event.author, repo.full_name
        )),
        Permission::Write => match parsed {
            Err(error) => Some(mistake(&event.author, &error)),
            Ok(command) => act(app, engine, &repo, event, command).await?,
        },
    };
    if let Some(reply) = reply {
        github.comment(&repo, event.issue_number, &reply).await?;
    }
    Ok(())
}

/// A reply to a command that could not be read: what is wrong, and how it is written.
fn mistake(author: &str, error: &CommandError) -> String {
    format!(
        "@{author} I could not read that command: {error}\n\n<details><summary>How to use \
         <code>/runbook</code></summary>\n\n{}\n</details>",
        command::USAGE
    )
}

/// Carries out a command from someone allowed to; answers the reply to post, if any.
async fn act(
    app: &App,
    engine: &Engine,
    repo: &RepoInfo,
    event: &IssueComment,
    command: Command,
) -> Result<Option<String>, CommentError> {
    let store = app.store().as_ref();
    let command = match command {
        Command::Help => return Ok(Some(command::USAGE.to_string())),
        Command::Start(options) => return start(app, engine, repo, event, options).await,
        other => other,
    };
    // Every other command acts on the thread's latest runbook.
    let Some(number) = store
        .latest_runbook_in_thread(repo.full_name.as_str(), event.issue_number)
        .await?
    else {
        return Ok(Some(format!(
            "@{} no runbook has been started in this thread yet. Start one with \
             `/runbook <what to do>`.",
            event.author
        )));
    };
    let action = match command {
        Command::Execute { step } => Action::Execute { up_to: step },
        Command::Retry => Action::Retry,
        Command::Cancel => Action::Cancel,
        Command::Status => return status_reply(app, engine, number).await.map(Some),
        Command::Help | Command::Start(_) => unreachable!("answered above"),
    };
    let writer = Actor::Writer {
        repository: &repo.full_name,
    };
    match app.act(number, writer, &action).await {
        Ok(()) => {
            // The status comment shows the change: a report asked for after the command
            // woke the engine, so woken again for it.
            store.request_report(number).await?;
            app.wake();
            Ok(None)
        }
        // The runbook's state does not allow it (nothing failed, nothing left…): say why.
        Err(error) if error.is_for_the_user() => Ok(Some(format!("@{} {error}.", event.author))),
        Err(error) => Err(error.into()),
    }
}

/// A short answer to `/runbook status`, pointing at the status comment.
async fn status_reply(
    app: &App,
    engine: &Engine,
    number: RunbookNumber,
) -> Result<String, CommentError> {
    let store = app.store();
    let summary = store
        .runbook_summary(number)
        .await?
        .ok_or(CommentError::Vanished(number))?;
    let thread = store.thread(number).await?;
    // The status comment is brought up to date too.
    store.request_report(number).await?;
    app.wake();
    let counts = &summary.counts;
    let mut reply = format!(
        "Runbook [#{number}]({}) is **{}**: {} of {} steps completed",
        engine.dashboard(number),
        status(counts).as_str(),
        counts.completed,
        counts.total
    );
    if let Some(url) = thread.and_then(|t| t.status_comment_url) {
        reply.push_str(&format!(" ([details]({url}))"));
    }
    reply.push('.');
    for pr in &summary.pull_requests {
        reply.push_str(&format!("\n- {}", pr.url));
    }
    Ok(reply)
}

/// Starts a runbook from a comment (or finds the one this comment already started), and
/// makes sure it has its status comment.
async fn start(
    app: &App,
    engine: &Engine,
    repo: &RepoInfo,
    event: &IssueComment,
    options: StartOptions,
) -> Result<Option<String>, CommentError> {
    let issue_body = event.issue_body.as_deref().filter(|b| !b.trim().is_empty());
    let prompt = match options.prompt_or(issue_body) {
        Ok(prompt) => prompt,
        Err(error) => return Ok(Some(mistake(&event.author, &error))),
    };
    let from_comment = !options.prompt.trim().is_empty();
    if !from_comment && let Some(refusal) = untrusted_body(engine, repo, event).await? {
        return Ok(Some(refusal));
    }
    let kind = if event.is_pull_request {
        "Pull request"
    } else {
        "Issue"
    };
    // The thread is context for the planner: its title, and its body unless that is the
    // prompt itself.
    let context = match (from_comment, issue_body) {
        (true, Some(body)) => format!(
            "{kind} #{}: {}\n\n{body}",
            event.issue_number, event.issue_title
        ),
        _ => format!("{kind} #{}: {}", event.issue_number, event.issue_title),
    };
    let request = RunbookRequest {
        org: repo.full_name.owner().to_string(),
        repo: repo.full_name.name().to_string(),
        // From the prompt when it is the comment's; else the thread names the task.
        title: (!from_comment).then(|| title_from_prompt(&event.issue_title)),
        prompt,
        oneshot: Some(!options.plan_only),
        draft: options.draft,
        pr_mode: options.pr_mode,
        target_branch: Some(
            options
                .target
                .unwrap_or_else(|| repo.default_branch.clone()),
        ),
        // Pull request bodies start with it: they link back to the thread (GitHub shows the
        // link in the thread too) and name who asked.
        description: Some(format!(
            "From #{}, requested by @{}.",
            event.issue_number, event.author
        )),
        labels: None,
        author_email: None,
    };
    let thread = NewThread {
        repository: repo.full_name.to_string(),
        issue_number: event.issue_number,
        is_pull_request: event.is_pull_request,
        url: event.issue_url.clone(),
        command_comment_id: event.comment_id,
        requested_by: event.author.clone(),
        context: Some(context),
    };
    let store = app.store();
    let started = match app.start_in_thread(request, &thread).await {
        Ok(started) => started,
        // A prompt too long, say: the commenter is told, the field named as the API names it.
        Err(OpError::Invalid(error)) => return Ok(Some(format!("@{} {error}.", event.author))),
        // The organisation's budget is spent: nothing starts, and the thread is told why.
        Err(OpError::BudgetExhausted(reason)) => {
            return Ok(Some(format!(
                "@{} nothing was started: {reason}.",
                event.author
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let (number, created) = (started.number, started.new);
    let record = store
        .thread(number)
        .await?
        .ok_or(CommentError::Vanished(number))?;
    if record.status_comment_id.is_some() {
        return Ok(None);
    }
    let body = engine
        .status_body(&record)
        .await?
        .ok_or(CommentError::Vanished(number))?;
    // Handled again after a crash: the status comment may have been written already.
    let existing = if created {
        None
    } else {
        find_status_comment(engine, repo, event.issue_number, number).await?
    };
    let comment = match existing {
        Some(comment) => comment,
        None => {
            engine
                .github()
                .comment(repo, event.issue_number, &body)
                .await?
        }
    };
    store
        .set_status_comment(number, comment.id, &comment.url, &body)
        .await?;
    // The runbook may have moved on while the comment was written: its lease holder (or the
    // next worker to take it) brings the comment up to date.
    app.wake();
    Ok(None)
}

/// A bare `/runbook` makes the issue's (or pull request's) body the prompt, and prompts
/// become commands that run. Whoever wrote that body must be allowed to run code in the
/// repository, like the commenter: anyone can open an issue on a public repository, and an
/// outsider's text must not run because a maintainer typed `/runbook` under it. Answers the
/// refusal to post when the author lacks write access (or is unknown, or a bot).
async fn untrusted_body(
    engine: &Engine,
    repo: &RepoInfo,
    event: &IssueComment,
) -> Result<Option<String>, CommentError> {
    let kind = if event.is_pull_request {
        "pull request"
    } else {
        "issue"
    };
    let refusal = |writer: &str| {
        format!(
            "Sorry @{}, nothing was started: a bare `/runbook` runs the description of this \
             {kind}, and it was written by {writer}, who does not have write access to {}. \
             Put the task in your own comment instead: `/runbook <what to do>`.",
            event.author, repo.full_name
        )
    };
    let Some(writer) = event.issue_author.as_deref() else {
        return Ok(Some(refusal("someone the app cannot tell")));
    };
    if writer.eq_ignore_ascii_case(&event.author) {
        // The commenter's own permission was checked already.
        return Ok(None);
    }
    let permission = engine.github().permission(repo, writer).await?;
    Ok(match permission {
        Permission::Write => None,
        Permission::ReadOnly => Some(refusal(&format!("@{writer}"))),
    })
}

/// The status comment the app wrote for a runbook in a thread, if any: one that starts with
/// the runbook's marker *and* was written by the app's bot (anyone can write the marker; the
/// app edits only its own comment).
async fn find_status_comment(
    engine: &Engine,
    repo: &RepoInfo,
    issue: u64,
    number: RunbookNumber,
) -> Result<Option<crate::github::issues::Comment>, CommentError> {
    let marker = marker(number);
    let github = engine.github();
    let bot = format!("{}[bot]", github.identity().await?.slug);
    let comments = github.comments(repo, issue).await?;
    Ok(comments
        .into_iter()
        .find(|(_, body, author)| body.starts_with(&marker) && author.eq_ignore_ascii_case(&bot))
        .map(|(comment, _, _)| comment))
}
