//! The web console in a real browser (Debian's chromium through chromedriver, WebDriver via
//! fantoccini): analyst A signs in and identifies a photo, sees the mate and confirms it; A
//! cannot give the second confirmation; analyst B finds the candidate in the review queue and
//! confirms it; it is `confirmed`; an auditor sees the review leaves and checks a leaf's proof
//! in the browser; a kiosk token is refused at sign-in. Each view is saved as a screenshot
//! (under `BIOMATCH_SCREENSHOTS`, default the target directory's `console-screenshots`).
//! Skipped without chromedriver, except under `CI=true`, where that is a failure.

use biomatch_domain::Role;
use biomatch_face::testing;
use biomatch_proto::v1::{EnrollMode, EnrollRequest, Probe, probe};
use biomatch_tests::{backends, photo_cluster};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// chromedriver on a free port, stopped when dropped.
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

fn chromedriver() -> Option<PathBuf> {
    let found = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromedriver is missing (scripts/test.sh installs Debian's chromium-driver)"
        );
        eprintln!("skipped: no chromedriver (apt-get install chromium chromium-driver)");
    }
    found
}

async fn start_driver(binary: &Path) -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let child = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    // Stopped (killed and waited for) when dropped, on every path.
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    // Ready when its status endpoint answers (bounded: 30 s).
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if http.get(format!("{}/status", driver.url)).send().await.is_ok_and(|r| r.status().is_success()) {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
    ];
    caps.insert("goog:chromeOptions".into(), serde_json::json!({ "args": args }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector).capabilities(caps).connect(&driver.url).await.expect("a browser session")
}

struct Console {
    client: Client,
    base: String,
    shots: PathBuf,
}

impl Console {
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css} did not appear: {e}"))
    }

    /// The element's text once it is there (found again if a render replaced it meanwhile).
    async fn text(&self, css: &str) -> String {
        for _ in 0..50 {
            match self.find(css).await.text().await {
                Ok(text) => return text,
                Err(fantoccini::error::CmdError::Standard(e))
                    if e.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
                Err(e) => panic!("text of {css}: {e}"),
            }
        }
        panic!("{css} kept being replaced")
    }

    /// Signs in from a fresh tab's state (no token kept) on the console's front page.
    async fn sign_in(&self, token: &str) {
        self.sign_in_at("", token).await;
    }

    /// Signs in from a fresh tab opened at `hash` (a link someone sent), without waiting.
    async fn sign_in_at(&self, hash: &str, token: &str) {
        self.client.goto(&format!("{}/", self.base)).await.expect("console");
        self.client.execute("sessionStorage.clear();", vec![]).await.expect("cleared");
        self.go(hash).await;
        self.client.refresh().await.expect("reloaded");
        self.find("#token").await.send_keys(token).await.expect("token typed");
        self.find("#sign-in").await.click().await.expect("sign in");
    }

    /// Signs in and waits until the console shows the signed-in navigation: the sign-in moves
    /// to the role's home view once the server has answered, so navigating before then races it.
    async fn sign_in_and_wait(&self, token: &str) {
        self.sign_in(token).await;
        self.find("#sign-out").await;
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("console-{name}.png")), png).expect("screenshot saved");
    }

    async fn go(&self, hash: &str) {
        self.client.goto(&format!("{}/{hash}", self.base)).await.expect("navigate");
    }
}

fn photo(bytes: Vec<u8>) -> Option<Probe> {
    Some(Probe { kind: Some(probe::Kind::Image(bytes)) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analysts_review_and_an_auditor_checks_in_a_real_browser() {
    let Some(binary) = chromedriver() else { return };
    let (Some(models), Some(photos)) = (testing::model_dir(), testing::photo_dir()) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = backends(dir.path()).await.remove(0);
    let cluster = photo_cluster(&backend, dir.path(), models, "lane").await;
    for subject in ["obama", "biden"] {
        let bytes = std::fs::read(photos.join(format!("{subject}.jpg"))).expect("photo");
        let request = EnrollRequest {
            gallery: "lane".into(),
            subject_id: subject.into(),
            samples: vec![photo(bytes).expect("probe")],
            mode: EnrollMode::Add.into(),
            idempotency_key: String::new(),
        };
        cluster.ingest().enroll(request).await.expect("enrolled");
    }
    let base = format!("http://{}", cluster.running.http_addr.expect("gateway"));

    // The page's headers: a strict policy, no framing.
    let page = reqwest::get(format!("{base}/")).await.expect("console page");
    let csp = page.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe"),
        "{csp}"
    );
    assert_eq!(page.headers().get("x-frame-options").and_then(|v| v.to_str().ok()), Some("DENY"));

    let shots = std::env::var_os("BIOMATCH_SCREENSHOTS")
        .map_or_else(|| dir.path().join("screenshots"), PathBuf::from);
    std::fs::create_dir_all(&shots).expect("screenshot directory");
    let driver = start_driver(&binary).await;
    let console = Console { client: browser(&driver).await, base, shots };

    // Analyst A identifies a photo and sees the mate.
    console.sign_in_and_wait(&cluster.token(Role::Analyst, "analyst-a")).await;
    console.find("#gallery option[value='lane']").await;
    let probe = photos.join("obama2.jpg");
    console.find("#probe-file").await.send_keys(&probe.to_string_lossy()).await.expect("photo chosen");
    console.find("#run-search").await.click().await.expect("search");
    assert_eq!(console.text("#decision").await, "mate");
    console.find("#candidates tr[data-subject='obama']").await;
    console.screenshot("identify").await;

    // A confirms first; A cannot give the second confirmation.
    console.find("#open-search").await.click().await.expect("open the search");
    let confirm = "#reviewed tr[data-subject='obama'] button[data-outcome='confirmed']";
    console.find(confirm).await.click().await.expect("confirm");
    console.find("#reviewed tr[data-subject='obama'] .state.awaiting_second").await;
    console.find(confirm).await.click().await.expect("confirm again");
    assert!(console.text("#error").await.contains("already confirmed"));
    console.screenshot("search-record").await;

    // B opens a link to the queue, signs in there, and confirms: confirmed.
    console.sign_in_at("#/queue", &cluster.token(Role::Analyst, "analyst-b")).await;
    console.find("#queue .pending a").await.click().await.expect("open from the queue");
    console.screenshot("review-queue-open").await;
    console.find(confirm).await.click().await.expect("second confirmation");
    console.find("#reviewed tr[data-subject='obama'] .state.confirmed").await;
    console.screenshot("confirmed").await;

    // An auditor sees both review leaves and checks one's proof in the browser.
    console.sign_in_and_wait(&cluster.token(Role::Auditor, "auditor-1")).await;
    console.find("#filter-operation").await.send_keys("review").await.expect("filter");
    console.find("#apply-filters").await.click().await.expect("apply");
    let rows = console.find("#leaves[data-query*='operation=review'] tr[data-operation='review']").await;
    let reviewers = console.text("#leaves").await;
    assert!(reviewers.contains("analyst-a") && reviewers.contains("analyst-b"), "{reviewers}");
    console.screenshot("audit-log").await;
    let index = rows.attr("data-index").await.expect("attr").expect("an index");
    console.go(&format!("#/leaf/{index}")).await;
    assert_eq!(console.text("#browser-verified").await, "the leaf is in the signed tree");
    assert_eq!(console.text("#server-verified").await, "verified");
    console.screenshot("leaf-proof").await;

    // An admin sees the galleries; a kiosk token is refused at sign-in.
    console.sign_in_and_wait(&cluster.token(Role::Admin, "admin-1")).await;
    assert!(console.text("#galleries tr[data-gallery='lane']").await.contains("lane"));
    console.screenshot("galleries").await;
    console.sign_in(&cluster.kiosk_token("lane")).await;
    assert!(console.text("#error").await.contains("not for kiosk"));
    console.screenshot("kiosk-refused").await;

    console.client.close().await.expect("browser closed");
    cluster.running.shutdown().await;
}
