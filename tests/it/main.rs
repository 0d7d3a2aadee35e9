//! The integration tests, in one binary (linked once): the real server on a loopback port,
//! over HTTP; both databases; GitHub replaced by the stand-in. One module per area.
//!
//! Tests that change this process's global state live in binaries of their own: `agents`
//! and `openai_agent` put the engine's secrets into the environment, `git` and
//! `graphql_queries` install a global tracing subscriber (to read every log line, to count
//! SQL statements), and `config_env` changes the environment.

#[macro_use]
#[path = "../support/mod.rs"]
mod support;

mod api;
mod browser;
mod chaos;
mod cli;
mod client;
mod comments;
mod crash;
mod dashboard;
mod doors;
mod egress;
mod engine;
mod github;
mod graphql;
mod hostile;
mod limits;
mod openapi;
mod setup;
mod standin;
mod standin_conformance;
mod store;
mod usage;
mod webhooks;
