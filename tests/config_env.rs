//! The test configuration ignores the environment: a developer's own `GITHUB_APP_ID` or
//! `RUNBOOKS_WORKERS` must not change what a test runs. (A binary of its own: it changes
//! this process's environment, which no other test may read at the same time.)

use runbooks::config::Config;

#[test]
fn the_test_configuration_ignores_the_environment() {
    // SAFETY: the only test of this binary, so no other thread reads the environment.
    unsafe {
        std::env::set_var("RUNBOOKS_WORKERS", "77");
        std::env::set_var("RUNBOOKS_AGENT_MAX_PROCESSES", "12");
        std::env::set_var("GITHUB_APP_ID", "4242");
        std::env::set_var("RUNBOOKS_AGENT", "command");
    }
    let config = Config::for_database("sqlite://x.db");
    assert_eq!(config.workers, 4);
    assert_eq!(config.agent.limits.processes, Some(4096));
    assert_eq!(config.github.app_id, None);
    assert_eq!(config.agent.kind, runbooks::config::AgentKind::Script);
    assert_eq!(config.database_url, "sqlite://x.db");
}
