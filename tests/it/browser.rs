//! The dashboard in a real browser: headless Chromium driven through chromedriver (WebDriver,
//! with `fantoccini`), against the real server running real runbooks on the GitHub stand-in.
//!
//! Signs in through the form, watches a running step finish on the same page (live updates,
//! no reload), and retries a failed runbook with its button. Screenshots are saved to
//! `target/test-artifacts/`.

use crate::support;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use runbooks::domain::RunbookStatus;
use serde_json::{Value, json};
use support::{Backend, TestServer, server_for, wait_for};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: this test needs Debian's `chromium` and `chromium-driver` \
                 packages, which `.ci/run` installs (apt-get install chromium chromium-driver); \
                 `{package}` provides {path}"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group: Chromium is its child, and goes with it.
        let child = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session through chromedriver")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // After a failure the browser was not closed: take its processes down too.
        if std::thread::panicking()
            && let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    let path = artifacts().join(name);
    std::fs::write(&path, png).unwrap();
    println!("screenshot: {}", path.display());
}

/// Evaluates a JavaScript expression in the page.
async fn eval(browser: &Client, expression: &str) -> Value {
    browser
        .execute(&format!("return {expression};"), vec![])
        .await
        .unwrap_or_else(|e| panic!("evaluating {expression}: {e}"))
}

/// The state a step shows on the page (`null` while the page has no such step, or while
/// the browser is between two pages).
async fn shown_state(browser: &Client, step: &str) -> Value {
    let script = format!(
        "var s = document.querySelector('li[data-step=\"{step}\"]'); \
         return s ? s.getAttribute('data-state') : null;"
    );
    browser
        .execute(&script, vec![])
        .await
        .unwrap_or(Value::Null)
}

/// Waits until the page shows the step in one of `states`.
async fn wait_for_shown(browser: &Client, step: &str, states: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = shown_state(browser, step).await;
        if let Some(state) = state.as_str().filter(|s| states.contains(s)) {
            return state.to_string();
        }
        if Instant::now() >= deadline {
            let source = browser.source().await.unwrap_or_default();
            panic!("step {step} never showed {states:?} (last: {state}); page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn create(t: &TestServer, prompt: String) -> i64 {
    t.api()
        .create(&json!({"repository": {"org": "acme-corp", "name": "backend"}, "prompt": prompt}))
        .await
        .expect("created")
        .runbook_number
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let markers = tempfile::tempdir().unwrap();
    let dir = markers.path().display().to_string();
    let github = support::github_with_backend(&[("README.md", "# backend\n")]).await;
    // Jailed steps see the markers directory (read-only) and nothing else outside their tree.
    let readable = markers.path().to_path_buf();
    let t = server_for(&github, Backend::Sqlite, move |config| {
        config.agent.read_paths.push(readable)
    })
    .await;

    // A runbook whose step 2 runs until the test says go.
    let running = create(
        &t,
        format!(
            "Wait for a signal.\n\n## Execution Steps\n\
             ### Step 1: Prepare\n```sh\necho one > one.txt\n```\n\
             ### Step 2: Wait for the signal\n```sh\nwhile [ ! -e {dir}/go ]; do sleep 0.05; done\necho two > two.txt\n```\n\
             ### Step 3: Finish\n```sh\necho three > three.txt\n```\n"
        ),
    )
    .await;
    wait_for(&t, running, "step 2 to run", |d| {
        d.steps.completed == 1 && d.steps.in_progress == 1
    })
    .await;

    let driver = Driver::start().await;
    let browser = driver.browser().await;

    // Not signed in: the page asks for a token, then comes back.
    let page = t.url(&format!("/runbooks/{running}"));
    browser.goto(&page).await.unwrap();
    let url = browser.current_url().await.unwrap();
    assert_eq!(url.path(), "/login", "{url}");
    browser
        .find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(&t.token)
        .await
        .unwrap();
    browser
        .find(Locator::Css("form.login button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while browser.current_url().await.unwrap().as_str() != page {
        assert!(Instant::now() < deadline, "not back on the runbook's page");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        eval(&browser, "document.cookie.indexOf('runbooks_session')").await,
        json!(-1),
        "the session cookie is HttpOnly"
    );

    // Step 2 runs; the page follows it to the end without being reloaded.
    assert_eq!(
        wait_for_shown(&browser, "2", &["in_progress"]).await,
        "in_progress"
    );
    assert_eq!(shown_state(&browser, "1").await, json!("completed"));
    assert_eq!(
        eval(&browser, "document.getElementById('status').textContent").await,
        json!("in_progress")
    );
    eval(&browser, "(window.__notReloaded = 'still this page')").await;
    screenshot(&browser, "dashboard-running.png").await;
    std::fs::write(markers.path().join("go"), "").unwrap();
    wait_for_shown(&browser, "2", &["completed"]).await;
    wait_for_shown(&browser, "3", &["completed"]).await;
    assert_eq!(
        eval(&browser, "window.__notReloaded").await,
        json!("still this page"),
        "the page was updated in place, not reloaded"
    );
    assert_eq!(
        eval(&browser, "document.getElementById('status').textContent").await,
        json!("completed")
    );
    let commit = eval(
        &browser,
        "document.querySelector('li[data-step=\"2\"] code.sha').getAttribute('title')",
    )
    .await;
    assert_eq!(commit.as_str().map(str::len), Some(40), "{commit}");
    assert!(
        eval(&browser, "document.getElementById('live-note').textContent")
            .await
            .as_str()
            .unwrap()
            .starts_with("Updated live")
    );

    // A runbook that fails once; Retry on its page runs it again.
    let flaky = create(
        &t,
        format!(
            "## Execution Steps\n### Step 1: Flaky\n```sh\n\
             if [ -e {dir}/fixed ]; then\n  while [ ! -e {dir}/go2 ]; do sleep 0.05; done\n  echo fixed > fixed.txt\n\
             else\n  echo 'the first attempt fails' >&2\n  exit 3\nfi\n```\n"
        ),
    )
    .await;
    support::wait_for_status(&t, flaky, &[RunbookStatus::Failed]).await;
    browser
        .goto(&t.url(&format!("/runbooks/{flaky}")))
        .await
        .unwrap();
    assert_eq!(shown_state(&browser, "1").await, json!("failed"));
    let error = browser
        .find(Locator::Css("li[data-step=\"1\"] pre.error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(error.contains('3'), "{error}");
    // What broke it is fixed (outside the working tree, which the step may read but not
    // write: it runs jailed).
    std::fs::write(markers.path().join("fixed"), "").unwrap();
    browser
        .find(Locator::Css("form[action$=\"/retry\"] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let state = wait_for_shown(&browser, "1", &["queued", "in_progress"]).await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        format!("/runbooks/{flaky}"),
        "back on the page after the action"
    );
    wait_for_shown(&browser, "1", &["in_progress"]).await;
    screenshot(&browser, "dashboard-retry.png").await;
    println!("after Retry, step 1 showed {state}, then in_progress");
    std::fs::write(markers.path().join("go2"), "").unwrap();
    wait_for_shown(&browser, "1", &["completed"]).await;

    browser.close().await.unwrap();
    drop(driver);
    t.stop().await;
}
