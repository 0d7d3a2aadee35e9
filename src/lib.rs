//! runbooks: a self-hosted GitHub App that turns a task written in plain words into a plan of
//! numbered steps, executes each step with a coding agent, commits per step and opens pull
//! requests.

pub mod agent;
pub mod api;
pub mod client;
pub mod comment;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod engine;
pub mod git;
pub mod github;
pub mod graphql;
pub mod http;
pub mod intake;
pub mod ops;
pub mod routes;
pub mod server;
pub mod status_comment;
pub mod store;
pub mod tokens;
