//! The operator's console in a real browser: headless Chromium (Debian's `chromium`), driven through
//! WebDriver (`chromedriver`, with the fantoccini client over plain HTTP on loopback), against an
//! in-process cluster of real nodes. The page lists every node; a search shows up in the requests and
//! its waterfall has one row per node attempt; a killed read node turns `down` on the page within a
//! refresh of the gateway noticing, and `retired` once it leaves the membership; the faults panel is
//! read-only until the token is given; and the page meets no script error on the way. Screenshots go to `<target>/console-screenshots/`.
//!
//! Without Chromium these tests fail, saying how to install it (scripts/install-chromium.sh, which
//! scripts/test.sh runs): they never pass silently.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{FAULT_TOKEN, RandomVectors, SplitMix64, TestCluster, code, newest_manifest};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const DIM: usize = 16;
/// 17,000 × 16 floats is just over index_file_size = 1 MB: every flush stays its own file.
const ROWS: usize = 17_000;

/// A chromedriver child process, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require_chromium() {
    for path in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: the console's browser tests need Debian's `chromium` and \
             `chromium-driver` packages (scripts/install-chromium.sh installs them; scripts/test.sh runs it)"
        );
    }
}

/// Starts chromedriver on a free loopback port and waits (at most 15 s) until it says it serves.
fn start_driver() -> Driver {
    require_chromium();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let stdout = child.stdout.take().expect("chromedriver's stdout");
    let rx = common::process::lines_of(stdout);
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("started successfully") => return driver,
            Ok(line) => said.push(line),
            Err(_) => panic!("chromedriver did not start on port {port}: {said:#?}"),
        }
    }
}

/// A headless Chromium session, with the browser's own console log kept for `browser_log`.
async fn open_browser(driver: &Driver, profile: &Path) -> Client {
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--window-size=1500,1250",
                format!("--user-data-dir={}", profile.display()),
            ],
        },
        "goog:loggingPrefs": { "browser": "ALL" },
    });
    let Value::Object(capabilities) = capabilities else {
        unreachable!("a JSON object")
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot start headless Chromium through {}: {e}", driver.url))
}

/// chromedriver's browser log (`POST /session/{id}/se/log`): everything the page's console said,
/// script errors and failed loads included.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type": "browser"}"#.into()))
    }
}

/// The browser log's entries at level SEVERE (errors), as text.
async fn severe_log_entries(browser: &Client) -> Vec<String> {
    let log = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("chromedriver's browser log");
    log.as_array()
        .expect("the browser log is a list")
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn eval(browser: &Client, script: &str) -> Value {
    browser
        .execute(script, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("script `{script}`: {e}"))
}

/// Evaluates `script` every 50 ms until `done` accepts its value, at most `limit` long; the value.
async fn wait_in_page(
    browser: &Client,
    what: &str,
    limit: Duration,
    script: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    let mut last;
    loop {
        last = eval(browser, script).await;
        if done(&last) {
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not within {limit:?}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clicks the element `css` finds; the page redraws every second, so a click that lands on a row
/// being replaced (or not drawn yet) is tried again, every 50 ms for at most 2 s.
async fn click(browser: &Client, css: &str) {
    let mut last = String::new();
    for _ in 0..40 {
        match browser.find(Locator::Css(css)).await {
            Ok(element) => match element.click().await {
                Ok(()) => return,
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot click `{css}`: {last}");
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    eval(browser, "window.scrollTo(0, 0); return null;").await;
    let png = browser.screenshot().await.expect("screenshot");
    let path = screenshot_dir().join(name);
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The errors the page collected itself (`window.__consoleErrors`: script errors, failed loads,
/// rejected promises, console.error) and the browser's SEVERE log entries: both must be empty.
async fn assert_no_console_errors(browser: &Client) {
    let collected = eval(browser, "return window.__consoleErrors;").await;
    assert_eq!(
        collected,
        json!([]),
        "the page's script loaded and met no error"
    );
    let severe = severe_log_entries(browser).await;
    assert!(severe.is_empty(), "browser console errors: {severe:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_nodes_fan_outs_and_a_node_going_down() {
    let driver = start_driver();
    // Fault injection on for the faults panel (which also turns hedging off: a search's attempts are
    // exactly its plan's); tracing configured, for the Jaeger link (the test installs no exporter: the
    // gateway only learns that tracing is on).
    let flags = [
        ("otlp-endpoint", "http://127.0.0.1:9".to_string()),
        (
            "console-jaeger-url",
            "http://jaeger.test:16686/".to_string(),
        ),
    ];
    let mut cluster = TestCluster::start_with_faults(2, 5, &flags).await;
    let admin = cluster.admin();
    let readers: Vec<String> = (0..2).map(|i| cluster.reader_host(i)).collect();
    let mut c = cluster.client().await;
    common::load_sized(&mut c, "console", 3, ROWS, DIM, &mut SplitMix64::new(5)).await;

    let profile = tempfile::tempdir().expect("browser profile");
    let browser = open_browser(&driver, profile.path()).await;
    browser
        .goto(&format!("http://{admin}/"))
        .await
        .expect("open the console");
    assert_eq!(browser.title().await.expect("title"), "mishards console");

    // Every node: the write node and both read nodes, healthy.
    let healthy = r#"return [...document.querySelectorAll('#nodes-body tr[data-state="healthy"]')].map(r => r.dataset.node + ' ' + r.dataset.role);"#;
    let rows = wait_in_page(
        &browser,
        "the nodes listed",
        Duration::from_secs(10),
        healthy,
        |v| v.as_array().is_some_and(|a| a.len() == 3),
    )
    .await;
    for reader in &readers {
        assert!(
            rows.as_array()
                .is_some_and(|a| a.contains(&json!(format!("{reader} read")))),
            "{reader} not listed: {rows}"
        );
    }

    // A search: its request appears, and its waterfall has one row per node attempt.
    let r = common::search(&mut c, "console", &SplitMix64::new(6).vectors(3, DIM), 5).await;
    assert_eq!(code(&r.status), 0, "{:?}", r.status);
    let manifest = newest_manifest(&cluster, "console").await;
    let trace = manifest["trace_id"].as_str().expect("trace id").to_string();
    let mut attempts: Vec<String> = manifest["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .flat_map(|n| {
            let node = n["node"].as_str().unwrap_or_default().to_string();
            n["attempts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |a| {
                    format!(
                        "{node} {} {}",
                        a["why"].as_str().unwrap_or_default(),
                        a["outcome"].as_str().unwrap_or_default()
                    )
                })
        })
        .collect();
    attempts.sort();
    assert!(attempts.len() >= 2, "the search fans out: {manifest}");
    let row = format!("#requests-body tr[data-trace='{trace}']");
    wait_in_page(
        &browser,
        "the search in the requests list",
        Duration::from_secs(5),
        &format!("return !!document.querySelector(\"{row}\");"),
        |v| v == &json!(true),
    )
    .await;
    click(&browser, &row).await;
    let shown = wait_in_page(
        &browser,
        "the search's waterfall",
        Duration::from_secs(5),
        &format!(
            "return [...document.querySelectorAll(\".wf[data-trace='{trace}'] .wf-attempt\")].map(r => r.dataset.node + ' ' + r.dataset.kind + ' ' + r.dataset.outcome).sort();"
        ),
        |v| v.as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    assert_eq!(shown, json!(attempts), "one row per node attempt");
    // Plan and merge are there too, and the status.
    let phases = eval(
        &browser,
        "return document.querySelectorAll('.wf .wf-phase').length;",
    )
    .await;
    assert_eq!(phases, json!(2));
    // The link to the search's trace in Jaeger.
    let link = eval(
        &browser,
        "return (document.querySelector('#waterfall a.jaeger') || {}).href || null;",
    )
    .await;
    assert_eq!(
        link,
        json!(format!("http://jaeger.test:16686/trace/{trace}"))
    );
    // The collections view: three files, each owned by a read node.
    let owners = wait_in_page(
        &browser,
        "the collection's files",
        Duration::from_secs(5),
        r#"return [...document.querySelectorAll('details[data-collection="console"] tbody tr')].map(r => r.dataset.owner);"#,
        |v| v.as_array().is_some_and(|a| a.len() == 3),
    )
    .await;
    for owner in owners.as_array().into_iter().flatten() {
        assert!(
            readers.iter().any(|r| owner == r.as_str()),
            "owner {owner} is a read node"
        );
    }
    // The live charts have drawn the search.
    wait_in_page(
        &browser,
        "the search in the live charts",
        Duration::from_secs(5),
        "return document.querySelectorAll('#chart-qps path.line').length;",
        |v| v.as_u64() >= Some(1),
    )
    .await;
    screenshot(&browser, "console-waterfall.png").await;

    // The faults panel: the rule shows without the token, with no way to change it...
    let faults = cluster.faults();
    faults
        .add(
            mishards::fault::rules_from_json(
                r#"{"target": {"nodes": ["127.0.0.9:1"]}, "kind": {"type": "delay", "fixed_ms": 1}}"#,
            )
            .expect("a rule")
            .remove(0),
        )
        .await
        .expect("add the rule");
    wait_in_page(
        &browser,
        "the fault rule",
        Duration::from_secs(5),
        "return document.querySelectorAll('#fault-rules tr[data-rule]').length;",
        |v| v == &json!(1),
    )
    .await;
    assert_eq!(
        eval(&browser, "return document.querySelectorAll('#fault-rules button').length + (document.getElementById('fault-editor').hidden ? 0 : 1);").await,
        json!(0),
        "read-only without the token"
    );
    // ...and with it, the rule can be removed from the page.
    browser
        .find(Locator::Id("fault-token"))
        .await
        .expect("token field")
        .send_keys(FAULT_TOKEN)
        .await
        .expect("type the token");
    click(&browser, "#fault-token-use").await;
    click(&browser, "#fault-rules tr[data-rule] button").await;
    wait_in_page(
        &browser,
        "the rule removed",
        Duration::from_secs(5),
        "return document.querySelectorAll('#fault-rules tr[data-rule]').length;",
        |v| v == &json!(0),
    )
    .await;
    let report = faults.report().await.expect("fault report");
    assert!(report.rules.is_empty(), "{report:?}");

    // A killed read node turns down on the page within a refresh (1 s) of the gateway marking it so.
    let killed = readers[0].clone();
    let started = Instant::now();
    if let Some(reader) = cluster.readers[0].take() {
        reader.abort().await;
    }
    let mut gateway_saw: Option<Instant> = None;
    let state = format!(
        "return (document.querySelector('#nodes-body tr[data-node=\"{killed}\"]') || {{dataset: {{}}}}).dataset.state;"
    );
    let page_saw = loop {
        if gateway_saw.is_none() {
            let (_, doc) = common::admin_json(&admin, "/cluster").await;
            let down = doc["read_nodes"]
                .as_array()
                .and_then(|a| a.iter().find(|n| n["node"] == killed.as_str()))
                .is_some_and(|n| n["state"] == "down");
            if down {
                gateway_saw = Some(Instant::now());
            }
        }
        if eval(&browser, &state).await == json!("down") {
            break Instant::now();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{killed} not down on the page within 10 s of its kill"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let gateway_saw = gateway_saw.unwrap_or(page_saw);
    assert!(
        page_saw.saturating_duration_since(gateway_saw) <= Duration::from_secs(2),
        "the page showed {killed} down {:?} after the gateway did",
        page_saw.saturating_duration_since(gateway_saw)
    );
    screenshot(&browser, "console-node-down.png").await;

    // Taken out of the membership (the hosts file lists the running read nodes only), it is retired.
    cluster.publish_readers();
    wait_in_page(
        &browser,
        "the removed node shown as retired",
        Duration::from_secs(5),
        &state,
        |v| v == &json!("retired"),
    )
    .await;

    assert_no_console_errors(&browser).await;
    browser.close().await.expect("close the browser");
    cluster.shutdown().await;
}
