//! Runbooks from issue and pull-request comments: the `/runbook …` command and what the app
//! answers (the status comment itself is rendered by `crate::status_comment`).

pub mod command;
pub mod handler;
