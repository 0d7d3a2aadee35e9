//! Runbooks from issue and pull-request comments: the `/runbook …` command, and the status
//! comment kept up to date while the runbook runs.

pub mod command;
pub mod handler;
pub mod status;
