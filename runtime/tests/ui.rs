//! The web console (`/ui`) against the real `eflow` binary.
//!
//! Over plain HTTP: the cookies' flags, the security headers, CSRF, tenant
//! scoping, the vendored script (and its gzip), schedules (fire times in the
//! zone and in UTC, pause, resume, a backfill previewed then started), flows
//! (versions with their runs, source and IR), a run's attempts in time,
//! lineage, a bulk retry from the run list's filter, and `--ui-no-login` (refused off loopback, the admin on loopback). In real headless Chromium (Debian's `chromium`),
//! driven by Playwright for Python (`tests/ui/console.py`, installed into a
//! virtualenv under the target directory the first time, pinned in
//! `tests/ui/requirements.txt`; never `playwright install`): every page,
//! filters, pages, approve, reject, cancel, schedules (last runs, pause,
//! resume, backfill), a bulk retry over a filtered set, flows, the attempts' chart, lineage, tenant scoping, axe-core
//! (vendored in `tests/ui/`, never served by the product), no console error
//! and no request to another host; screenshots of every page under
//! `target/tmp/ui-screenshots/`. Without chromium or the Python packages the
//! browser test is skipped with the reason, and fails when `CI` is set.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::binary::{Eflow, eflow};
use common::{ADMIN, Api, DEADLINE, poll_until};
use serde_json::{Value, json};

/// A flow with an approval whose subject is an evaluation, after a fan-out;
/// a run that waits an hour; a run that fails.
const SOURCE: &str = r#"
from "std/ml" import Model, Evaluation, ModelVersion, RegisterModel, LatestVersion, Promote, Stage
from "std/approval" import Approve

remote step TrainIt(name: String) -> Model
remote step Score(segment: String) -> Float
remote step EvalIt(model: Model) -> Evaluation
remote step Slow(x: Int) -> Int
remote step Boom(x: Int) -> Int

flow Retrain(model_name: String, segments: List<String> = ["north", "south", "west"]) -> ModelVersion? {
    let model = TrainIt(name: model_name)
    let scores = for s in segments join all {
        Score(segment: s)
    }
    let eval = EvalIt(model: model)
        after scores
    let decision = Approve(subject: eval, summary: "Register the retrained model?")
    when decision.approved {
        let version = RegisterModel(name: model_name, model: model, evaluation: eval, stage: Stage.Staging)
    }
    return version
}

flow Long(x: Int = 1) -> Int {
    let s = Slow(x: x)
    return s
}

flow Flaky(x: Int = 1) -> Int {
    let b = Boom(x: x)
        retry 2
        backoff fixed(150ms)
    return b
}

flow Ship(name: String) -> ModelVersion {
    let staged = LatestVersion(name: name, stage: Stage.Staging)
    let shipped = Promote(version: staged, stage: Stage.Production)
    return shipped
}

bindings dev {
    TrainIt = sim { duration: 20ms, failure_rate: 0.0 }
    Score = sim { duration: 10ms, failure_rate: 0.0 }
    EvalIt = sim { duration: 20ms, failure_rate: 0.0 }
    Slow = sim { duration: 1h, failure_rate: 0.0 }
    Boom = sim { duration: 10ms, failure_rate: 1.0 }
    Approve = approval { channel: "ui" }
    RegisterModel = registry { kind: "model" }
    LatestVersion = registry { kind: "model" }
    Promote = registry { kind: "model" }
}
"#;

/// How many children the wide run's fan-out has: its events fill more than one page.
const WIDE: usize = 60;

/// What the tests made: tokens and runs, as the browser script reads them.
struct World {
    api: Api,
    a_token: String,
    b_token: String,
    retrain: Vec<String>,
    wide: String,
    long: String,
    failed: String,
    failed_code: String,
    b_run: String,
    /// Tenant A's schedule of `Long`, yearly on 1 January at 03:00 in Berlin.
    yearly: String,
}

async fn world(server: &Eflow) -> World {
    let api = Api::new(format!("http://{}", server.addr));
    let a_token = api.create_tenant("acme", json!({})).await;
    let b_token = api.create_tenant("globex", json!({})).await;
    for t in [&a_token, &b_token] {
        api.deploy_source(t, &[("console.eflow", SOURCE)]).await;
    }
    let id = |v: Value| v["id"].as_str().expect("a run id").to_string();
    // Each run of a model belongs to it: the population page groups by key.
    let keyed = |flow: &'static str, input: Value, key: &'static str| {
        let api = api.clone();
        let token = a_token.clone();
        async move {
            api.post(
                Some(&token),
                "/v1/runs",
                &json!({ "flow": flow, "input": input, "key": key }),
            )
            .await
            .ok("start a run with a key")
        }
    };
    let mut retrain = Vec::new();
    for name in ["churn", "ltv", "fraud"] {
        retrain.push(id(
            keyed("Retrain", json!({ "model_name": name }), name).await
        ));
    }
    let segments: Vec<String> = (0..WIDE).map(|i| format!("segment-{i}")).collect();
    let wide = id(keyed(
        "Retrain",
        json!({ "model_name": "wide", "segments": segments }),
        "wide",
    )
    .await);
    let long = id(api.start(&a_token, "Long", json!({})).await);
    let failed = id(keyed("Flaky", json!({}), "flaky").await);
    let failed_view = api.wait_finished(&a_token, &failed).await;
    assert_eq!(failed_view["status"], "failed", "{failed_view}");
    let failed_code = failed_view["error"]["code"]
        .as_str()
        .expect("an error code")
        .to_string();
    let b_run = id(api.start(&b_token, "Long", json!({})).await);
    // A schedule far from firing: the overview lists it with its next fire time.
    let yearly = api
        .post(
            Some(&a_token),
            "/v1/schedules",
            &json!({ "flow": "Long", "cron": "0 3 1 1 *", "timezone": "Europe/Berlin", "key": "yearly" }),
        )
        .await
        .ok("a schedule")["id"]
        .as_str()
        .expect("a schedule id")
        .to_string();
    // Every Retrain run waits for its decision, so the pages show what they will keep showing.
    poll_until("four approvals to wait", DEADLINE, || async {
        let list = api
            .get(Some(&a_token), "/v1/approvals")
            .await
            .ok("approvals");
        (list.as_array().map_or(0, Vec::len) == 4).then_some(())
    })
    .await;
    api.history_caught_up().await;
    World {
        api,
        a_token,
        b_token,
        retrain,
        wide,
        long,
        failed,
        failed_code,
        b_run,
        yearly,
    }
}

// ---- plain HTTP -----------------------------------------------------------------

/// A browser's cookies, by hand: name → value.
#[derive(Default, Clone)]
struct Jar(std::collections::BTreeMap<String, String>);

impl Jar {
    fn take(&mut self, res: &reqwest::Response) -> Vec<String> {
        let mut set = Vec::new();
        for v in res.headers().get_all(reqwest::header::SET_COOKIE) {
            let v = v.to_str().expect("ascii").to_string();
            let (kv, _) = v.split_once(';').unwrap_or((&v, ""));
            let (k, val) = kv.split_once('=').expect("name=value");
            if v.contains("Max-Age=0") {
                self.0.remove(k);
            } else {
                self.0.insert(k.to_string(), val.to_string());
            }
            set.push(v);
        }
        set
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A client that follows no redirect: the test looks at each answer.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn get(base: &str, jar: &mut Jar, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let res = client()
        .get(format!("{base}{path}"))
        .header(reqwest::header::COOKIE, jar.header())
        .send()
        .await
        .expect("GET");
    jar.take(&res);
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, res.text().await.expect("body"), headers)
}

async fn post(base: &str, jar: &mut Jar, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let res = client()
        .post(format!("{base}{path}"))
        .header(reqwest::header::COOKIE, jar.header())
        .form(form)
        .send()
        .await
        .expect("POST");
    jar.take(&res);
    let status = res.status().as_u16();
    let location = res
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| l.to_str().unwrap_or_default().to_string());
    let body = res.text().await.expect("body");
    (status, location.unwrap_or(body))
}

/// `path` asked for with `Accept-Encoding: gzip` comes gzip-compressed, and
/// gunzip (which checks its CRC) gives back `plain`.
async fn assets_gzipped(base: &str, path: &str, plain: &[u8]) {
    let res = client()
        .get(format!("{base}{path}"))
        .header(reqwest::header::ACCEPT_ENCODING, "gzip, deflate, br")
        .send()
        .await
        .expect("GET");
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["vary"], "accept-encoding");
    let gz = res.bytes().await.expect("body");
    let file = std::env::temp_dir().join(format!("eflow-ui-{}.gz", std::process::id()));
    std::fs::write(&file, &gz).expect("write");
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&file)
        .output()
        .expect("gzip -dc");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, plain, "{path} decompressed");
    println!("{path}: {} bytes, {} gzipped", plain.len(), gz.len());
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .unwrap_or_else(|| panic!("a csrf field in {html}"));
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of value")].to_string()
}

/// Logs in with `token`; returns the session's cookies.
async fn login(base: &str, token: &str) -> Jar {
    let mut jar = Jar::default();
    let (status, page, _) = get(base, &mut jar, "/ui/login").await;
    assert_eq!(status, 200, "{page}");
    let csrf = csrf_of(&page);
    let (status, to) = post(
        base,
        &mut jar,
        "/ui/login",
        &[("token", token), ("csrf", &csrf)],
    )
    .await;
    assert_eq!((status, to.as_str()), (303, "/ui"), "login");
    jar
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_over_http_keeps_sessions_forms_and_tenants_apart() {
    let server = eflow("ui-http", &[]).await;
    let w = world(&server).await;
    let base = w.api.base.clone();

    // No session: to the login page, with a CSRF seed cookie and its flags.
    let mut jar = Jar::default();
    let res = client()
        .get(format!("{base}/ui/runs"))
        .send()
        .await
        .expect("GET");
    assert_eq!(res.status().as_u16(), 303);
    assert_eq!(res.headers()["location"], "/ui/login?next=%2Fui%2Fruns");
    let set = jar.take(&res);
    assert!(
        set.iter().any(|c| c.starts_with("eflow_csrf=")
            && c.contains("HttpOnly")
            && c.contains("SameSite=Strict")
            && c.contains("Path=/ui")
            && !c.contains("Secure")),
        "{set:?}"
    );
    let (_, page, headers) = get(&base, &mut jar, "/ui/login").await;
    let csp = headers["content-security-policy"].to_str().expect("csp");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-store");
    let csrf = csrf_of(&page);
    assert!(
        !page.contains("<code>Secure</code>"),
        "no HTTPS note on loopback: {page}"
    );

    // A login form from elsewhere, a wrong token, then the right one.
    let (status, _) = post(
        &base,
        &mut jar,
        "/ui/login",
        &[("token", &w.a_token), ("csrf", "forged")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = post(
        &base,
        &mut jar,
        "/ui/login",
        &[("token", "eflow_nope"), ("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let res = client()
        .post(format!("{base}/ui/login"))
        .header(reqwest::header::COOKIE, jar.header())
        .form(&[("token", w.a_token.as_str()), ("csrf", csrf.as_str())])
        .send()
        .await
        .expect("login");
    assert_eq!(res.status().as_u16(), 303);
    let set = jar.take(&res);
    let session = set
        .iter()
        .find(|c| c.starts_with("eflow_session="))
        .unwrap_or_else(|| panic!("a session cookie in {set:?}"));
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
        assert!(session.contains(flag), "{session}");
    }
    // The login renewed the seed: a form of before it no longer passes.
    assert!(set.iter().any(|c| c.starts_with("eflow_csrf=")), "{set:?}");
    let (status, _) = post(
        &base,
        &mut jar,
        &format!("/ui/runs/{}/cancel", w.long),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 403);

    // Pages as tenant A.
    let (status, page, _) = get(&base, &mut jar, "/ui/runs").await;
    assert_eq!(status, 200);
    for id in w.retrain.iter().chain([&w.wide, &w.long, &w.failed]) {
        assert!(page.contains(id.as_str()), "run {id} in the list");
    }
    assert!(
        !page.contains(&w.b_run),
        "tenant B's run in tenant A's list"
    );
    let (status, page, _) = get(
        &base,
        &mut jar,
        &format!("/ui/runs?error={}", w.failed_code),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        page.contains(&w.failed) && !page.contains(&w.long),
        "{page}"
    );
    let (status, page, _) = get(&base, &mut jar, "/ui/approvals").await;
    assert_eq!(status, 200);
    assert_eq!(
        page.matches("<article class=\"approval\"").count(),
        4,
        "{page}"
    );
    assert!(
        page.contains("primary_metric"),
        "the evaluation is shown: {page}"
    );
    let (status, page, _) = get(&base, &mut jar, &format!("/ui/runs/{}", w.wide)).await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("{WIDE} of {WIDE} done")), "{page}");
    // The attempts in time: the fan-out one bar, the approval still out.
    assert!(page.contains("<svg class=\"gantt\""), "{page}");
    for (row, outcome) in [
        ("model #1", "succeeded"),
        (&format!("scores (fan-out, {WIDE} children)"), "succeeded"),
        ("eval #1", "succeeded"),
        ("decision #1", "running"),
    ] {
        assert!(
            page.contains(&format!(
                "<tr><th scope=\"row\">{row}</th><td><span class=\"badge st-{outcome}\">"
            )),
            "{row} {outcome}: {page}"
        );
    }
    assert!(!page.contains("version #1"), "not reached: {page}");
    // The failed run: each attempt failed, the retries after their backoff.
    let (_, page, _) = get(&base, &mut jar, &format!("/ui/runs/{}", w.failed)).await;
    let attempts = page.matches("<th scope=\"row\">b #").count();
    assert!(attempts >= 2, "{page}");
    assert_eq!(
        page.matches("<g class=\"bar st-failed\">").count(),
        attempts,
        "{page}"
    );
    let row = |n: u32| {
        let at = page
            .find(&format!("<th scope=\"row\">b #{n}</th>"))
            .unwrap_or_else(|| panic!("attempt {n}: {page}"));
        let cells: Vec<&str> = page[at..]
            .split("<td>")
            .skip(2)
            .take(2)
            .map(|c| &c[..c.find("</td>").expect("a cell")])
            .collect();
        (cells[0].to_string(), cells[1].to_string())
    };
    let ((_, end1), (begin2, _)) = (row(1), row(2));
    assert!(
        begin2 > end1,
        "attempt 2 begins {begin2}, after attempt 1's end {end1}"
    );
    let (status, plain, headers) = get(&base, &mut jar, "/ui/static/htmx.min.js").await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/javascript")
    );
    assert!(headers.get("content-encoding").is_none());
    assets_gzipped(&base, "/ui/static/htmx.min.js", plain.as_bytes()).await;

    // Forms: a missing or wrong CSRF token changes nothing; the right one cancels.
    let cancel = format!("/ui/runs/{}/cancel", w.long);
    let (status, _) = post(&base, &mut jar, &cancel, &[]).await;
    assert_eq!(status, 400);
    let (status, _) = post(&base, &mut jar, &cancel, &[("csrf", "forged")]).await;
    assert_eq!(status, 403);
    assert_eq!(w.api.run(&w.a_token, &w.long).await["status"], "running");
    let (_, page, _) = get(&base, &mut jar, &format!("/ui/runs/{}", w.long)).await;
    let good = csrf_of(&page);
    let (status, to) = post(&base, &mut jar, &cancel, &[("csrf", &good)]).await;
    assert_eq!((status, to), (303, format!("/ui/runs/{}", w.long)));
    assert_eq!(w.api.run(&w.a_token, &w.long).await["status"], "cancelled");

    // Tenant B: none of A's runs, by list or by URL, nor its actions.
    let mut b = login(&base, &w.b_token).await;
    let (_, page, _) = get(&base, &mut b, "/ui/runs").await;
    assert!(page.contains(&w.b_run));
    for id in w.retrain.iter().chain([&w.wide, &w.failed]) {
        assert!(!page.contains(id.as_str()), "A's run {id} shown to B");
        let (status, _, _) = get(&base, &mut b, &format!("/ui/runs/{id}")).await;
        assert_eq!(status, 404, "A's run {id} opened by B");
    }
    let (_, page, _) = get(&base, &mut b, "/ui/approvals").await;
    assert!(page.contains("No decision is waiting"), "{page}");
    let b_csrf = csrf_of(&page);
    let decide = format!("/ui/runs/{}/approvals/decision", w.retrain[0]);
    let (status, _) = post(
        &base,
        &mut b,
        &decide,
        &[("csrf", &b_csrf), ("decision", "approve")],
    )
    .await;
    assert_eq!(status, 404);
    let a_approvals = w
        .api
        .get(Some(&w.a_token), "/v1/approvals")
        .await
        .ok("approvals");
    assert_eq!(
        a_approvals.as_array().map_or(0, Vec::len),
        4,
        "B decided A's approval"
    );

    // Retry: on a failed run's page only, not for another tenant, with CSRF.
    let failed_page = format!("/ui/runs/{}", w.failed);
    let retry = format!("{failed_page}/retry");
    let (_, page, _) = get(&base, &mut jar, &failed_page).await;
    assert!(page.contains(&format!("action=\"{retry}\"")), "{page}");
    let (_, page, _) = get(&base, &mut jar, &format!("/ui/runs/{}", w.long)).await;
    assert!(
        !page.contains("/retry\""),
        "a cancelled run has no retry: {page}"
    );
    let (status, _) = post(&base, &mut b, &retry, &[("csrf", &b_csrf)]).await;
    assert_eq!(status, 404, "B retried A's run");
    let (status, _) = post(&base, &mut jar, &retry, &[("csrf", "forged")]).await;
    assert_eq!(status, 403);
    assert!(
        w.api
            .run(&w.a_token, &w.failed)
            .await
            .get("retries")
            .is_none()
    );
    let (status, to) = post(&base, &mut jar, &retry, &[("csrf", &good)]).await;
    assert_eq!((status, to), (303, failed_page.clone()));
    // `Boom` always fails: the run fails again, retried once, by A's token.
    let again = poll_until("the retried run to fail again", DEADLINE, || async {
        let v = w.api.run(&w.a_token, &w.failed).await;
        (v["status"] == "failed" && v["retries"] == 1).then_some(v)
    })
    .await;
    assert_eq!(again["error"]["code"], w.failed_code.as_str(), "{again}");
    let (_, page, _) = get(&base, &mut jar, &failed_page).await;
    assert!(page.contains("<dt>Retried</dt><dd>1</dd>"), "{page}");
    assert!(page.contains("retried in the web console by"), "{page}");

    // A decision on the run's page goes back to the run.
    let run_page = format!("/ui/runs/{}", w.retrain[1]);
    let (_, page, _) = get(&base, &mut jar, &run_page).await;
    assert!(
        page.contains(&format!("data-approval=\"{}/decision\"", w.retrain[1])),
        "{page}"
    );
    let (status, to) = post(
        &base,
        &mut jar,
        &format!("{run_page}/approvals/decision"),
        &[
            ("csrf", &csrf_of(&page)),
            ("decision", "reject"),
            ("comment", "not this one"),
            ("back", "run"),
        ],
    )
    .await;
    assert_eq!((status, to), (303, run_page.clone()));
    let decided = w
        .api
        .get(Some(&w.a_token), "/v1/approvals?pending=false")
        .await
        .ok("approvals");
    let decided = decided
        .as_array()
        .and_then(|a| a.iter().find(|x| x["run"] == w.retrain[1].as_str()))
        .map(|a| a["decision"].clone())
        .unwrap_or(Value::Null);
    assert_eq!(decided["outcome"], "Rejected", "{decided}");
    assert_eq!(decided["comment"], "not this one", "{decided}");
    assert_eq!(decided["reviewer"], "default", "{decided}");
    let (_, page, _) = get(&base, &mut jar, &run_page).await;
    assert!(
        !page.contains("data-approval="),
        "decided, no longer asked: {page}"
    );

    // What a tenant writes is shown as text, never as markup.
    let hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>";
    let run = w
        .api
        .start(
            &w.a_token,
            "Retrain",
            json!({ "model_name": hostile, "segments": [hostile] }),
        )
        .await;
    let run = run["id"].as_str().expect("id");
    for path in [format!("/ui/runs/{run}"), format!("/ui/runs/{run}/live")] {
        let (status, page, _) = get(&base, &mut jar, &path).await;
        assert_eq!(status, 200);
        assert!(
            !page.contains("<script>alert") && !page.contains("<img src=x"),
            "{page}"
        );
        // The input is on the page, not in its live part.
        if !path.ends_with("/live") {
            assert!(
                page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
                "{page}"
            );
        }
    }
    w.api
        .post(
            Some(&w.a_token),
            &format!("/v1/runs/{run}/cancel"),
            &json!({}),
        )
        .await
        .ok("cancel the hostile run");

    // A login goes on to the console page asked for, and nowhere else.
    for (next, to) in [
        ("/ui/approvals", "/ui/approvals"),
        ("//evil.example/ui", "/ui"),
        ("https://evil.example/", "/ui"),
    ] {
        let mut fresh = Jar::default();
        let (_, page, _) = get(&base, &mut fresh, "/ui/login").await;
        let (status, location) = post(
            &base,
            &mut fresh,
            "/ui/login",
            &[
                ("token", &w.a_token),
                ("csrf", &csrf_of(&page)),
                ("next", next),
            ],
        )
        .await;
        assert_eq!((status, location.as_str()), (303, to), "next {next}");
    }

    schedules_over_http(&w, &base, &mut jar, &mut b).await;
    flows_over_http(&w, &base, &mut jar, &mut b).await;
    lineage_over_http(&w, &base, &mut jar, &mut b).await;
    population_over_http(&w, &base, &mut jar, &mut b).await;
    bulk_over_http(&w, &base, &mut jar, &mut b).await;

    // Logging out ends the session.
    let (_, page, _) = get(&base, &mut jar, "/ui").await;
    let (status, to) = post(&base, &mut jar, "/ui/logout", &[("csrf", &csrf_of(&page))]).await;
    assert_eq!((status, to.as_str()), (303, "/ui/login"));
    let (status, _, _) = get(&base, &mut jar, "/ui").await;
    assert_eq!(status, 303);
}

/// A bulk retry as tenant A (`jar`) from the run list's filter: the
/// confirmation counts the runs, a forged form is refused, the job's page
/// follows it to the end, every failed run is retried once naming the job;
/// B sees and touches none of it.
async fn bulk_over_http(w: &World, base: &str, jar: &mut Jar, b: &mut Jar) {
    // No Flaky run in progress: the failed ones are what the job will find.
    let failed: Vec<String> = poll_until("the Flaky runs to settle", DEADLINE, || async {
        w.api.history_caught_up().await;
        let running = w
            .api
            .all_runs(&w.a_token, "flow=Flaky&status=running")
            .await;
        let failed = w.api.all_runs(&w.a_token, "flow=Flaky&status=failed").await;
        running.is_empty().then(|| {
            failed
                .iter()
                .map(|r| r["id"].as_str().expect("id").to_string())
                .collect()
        })
    })
    .await;
    assert!(!failed.is_empty());
    let (_, page, _) = get(base, jar, "/ui/runs").await;
    assert!(!page.contains("bulk-actions"), "no filter, no bulk action");
    let (_, page, _) = get(base, jar, "/ui/runs?flow=Flaky&status=failed").await;
    let new = "/ui/bulk/new?action=retry&#38;flow=Flaky&#38;status=failed";
    assert!(page.contains(new), "{page}");
    assert!(page.contains("Cancel these"), "{page}");
    let (status, page, _) = get(base, jar, &new.replace("&#38;", "&")).await;
    assert_eq!(status, 200, "{page}");
    let n = failed.len();
    assert!(
        page.contains(&format!("<strong>{n}</strong> run")),
        "{n} runs: {page}"
    );
    let (status, page_, _) = get(base, jar, "/ui/bulk/new?action=nope&flow=Flaky").await;
    assert_eq!(status, 400, "{page_}");
    let form = [
        ("action", "retry"),
        ("flow", "Flaky"),
        ("status", "failed"),
        ("reason", "from the console"),
    ];
    let forged: Vec<(&str, &str)> = form.iter().copied().chain([("csrf", "forged")]).collect();
    let (status, _) = post(base, jar, "/ui/bulk", &forged).await;
    assert_eq!(status, 403);
    let csrf = csrf_of(&page);
    let real: Vec<(&str, &str)> = form
        .iter()
        .copied()
        .chain([("csrf", csrf.as_str())])
        .collect();
    let (status, to) = post(base, jar, "/ui/bulk", &real).await;
    assert_eq!(status, 303, "{to}");
    let id = to
        .strip_prefix("/ui/bulk/")
        .expect("the job's page")
        .to_string();
    let (status, page, _) = get(base, jar, &to).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Bulk retry"), "{page}");
    poll_until("the job to be done", DEADLINE, || {
        let live = format!("{to}/live");
        let mut jar = jar.clone();
        async move {
            let (_, live, _) = get(base, &mut jar, &live).await;
            live.contains("id=\"job-state\">done").then_some(())
        }
    })
    .await;
    let (_, live, _) = get(base, jar, &format!("{to}/live")).await;
    assert!(live.contains(&format!("id=\"job-acted\">{n}<")), "{live}");
    assert!(
        !live.contains("hx-get"),
        "a finished job's page stops polling: {live}"
    );
    for run in &failed {
        let events = w
            .api
            .get(
                Some(&w.a_token),
                &format!("/v1/runs/{run}/events?limit=1000"),
            )
            .await
            .ok("events");
        let retries: Vec<&str> = events
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["event"]["type"] == "retry_requested")
            .filter_map(|e| e["event"]["reason"].as_str())
            .filter(|r| r.starts_with("bulk "))
            .collect();
        assert_eq!(
            retries,
            vec![format!("bulk {id}: from the console")],
            "{run}"
        );
    }
    let (_, list, _) = get(base, jar, "/ui/bulk").await;
    assert!(list.contains(&id), "{list}");
    // B neither sees nor touches it.
    let (_, b_list, _) = get(base, b, "/ui/bulk").await;
    assert!(
        b_list.contains("no-jobs") && !b_list.contains(&id),
        "{b_list}"
    );
    for path in [to.clone(), format!("{to}/live")] {
        let (status, _, _) = get(base, b, &path).await;
        assert_eq!(status, 404, "{path}");
    }
    let b_csrf = csrf_of(&b_list);
    let (status, _) = post(base, b, &format!("{to}/cancel"), &[("csrf", &b_csrf)]).await;
    assert_eq!(status, 404);
}

/// The schedules page as tenant A (`jar`) and B (`b`): fire times in the
/// zone and in UTC, pause and resume behind CSRF, a backfill previewed
/// then started; none of it for B.
async fn schedules_over_http(w: &World, base: &str, jar: &mut Jar, b: &mut Jar) {
    let (status, page, _) = get(base, jar, "/ui/schedules").await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&format!("data-schedule=\"{}\"", w.yearly)),
        "{page}"
    );
    // 1 January, 03:00 in Berlin is 02:00 UTC (winter time).
    assert!(page.contains("-01-01 03:00:00 CET (+01:00)"), "{page}");
    assert!(page.contains("-01-01T02:00:00Z"), "{page}");
    let (_, other, _) = get(base, jar, "/ui/schedules?flow=Retrain").await;
    assert!(other.contains("No schedule matches"), "{other}");
    let (_, other, _) = get(base, jar, "/ui/schedules?key=yearly").await;
    assert!(other.contains(&w.yearly), "{other}");

    let pause = format!("/ui/schedules/{}/pause", w.yearly);
    let (status, _) = post(base, jar, &pause, &[("csrf", "forged")]).await;
    assert_eq!(status, 403);
    let paused = |api: Api, token: String| async move {
        let all = api.get(Some(&token), "/v1/schedules").await.ok("schedules");
        all[0]["paused"].as_bool()
    };
    assert_eq!(paused(w.api.clone(), w.a_token.clone()).await, Some(false));
    let csrf = csrf_of(&page);
    let (status, to) = post(base, jar, &pause, &[("csrf", &csrf)]).await;
    assert_eq!(status, 303, "{to}");
    assert_eq!(paused(w.api.clone(), w.a_token.clone()).await, Some(true));
    let (_, page, _) = get(base, jar, &to).await;
    assert!(page.contains("Paused schedule"), "{page}");
    assert!(page.contains("Resume schedule"), "{page}");
    // B can neither see nor pause nor backfill it.
    let (_, b_page, _) = get(base, b, "/ui/schedules").await;
    assert!(b_page.contains("No schedule matches"), "{b_page}");
    assert!(!b_page.contains(&w.yearly), "{b_page}");
    let b_csrf = csrf_of(&b_page);
    let resume = format!("/ui/schedules/{}/resume", w.yearly);
    let (status, _) = post(base, b, &resume, &[("csrf", &b_csrf)]).await;
    assert_eq!(status, 404);
    let backfill = format!("/ui/schedules/{}/backfill", w.yearly);
    let (status, _, _) = get(base, b, &backfill).await;
    assert_eq!(status, 404);
    let (status, _) = post(
        base,
        b,
        &backfill,
        &[
            ("csrf", &b_csrf),
            ("from", "2020-01-01T00:00"),
            ("to", "2023-12-31T00:00"),
        ],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(paused(w.api.clone(), w.a_token.clone()).await, Some(true));
    let (status, _) = post(base, jar, &resume, &[("csrf", &csrf)]).await;
    assert_eq!(status, 303);
    assert_eq!(paused(w.api.clone(), w.a_token.clone()).await, Some(false));

    // The preview starts nothing; the confirmation starts what it showed.
    let range = "?from=2020-06-01T00:00&to=2023-06-01T00:00";
    let (status, page, _) = get(base, jar, &format!("{backfill}{range}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("3 fire times, 3 runs to start"), "{page}");
    for year in ["2021", "2022", "2023"] {
        assert!(
            page.contains(&format!("{year}-01-01 03:00:00 CET (+01:00)"))
                && page.contains(&format!("{year}-01-01T02:00:00Z")),
            "{year}: {page}"
        );
    }
    let ids: Vec<String> = ["20210101T020000Z", "20220101T020000Z", "20230101T020000Z"]
        .iter()
        .map(|t| format!("{}.{t}", w.yearly))
        .collect();
    for id in &ids {
        assert!(page.contains(id.as_str()), "{id}: {page}");
        let r = w.api.get(Some(&w.a_token), &format!("/v1/runs/{id}")).await;
        assert_eq!(r.status, 404, "the preview started {id}");
    }
    let (status, _, _) = get(
        base,
        jar,
        &format!("{backfill}?from=2023-06-01T00:00&to=2020-06-01T00:00"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        base,
        jar,
        &backfill,
        &[
            ("csrf", "forged"),
            ("from", "2020-06-01T00:00"),
            ("to", "2023-06-01T00:00"),
        ],
    )
    .await;
    assert_eq!(status, 403);
    let (status, to) = post(
        base,
        jar,
        &backfill,
        &[
            ("csrf", &csrf),
            ("from", "2020-06-01T00:00"),
            ("to", "2023-06-01T00:00"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{to}");
    for id in &ids {
        let r = w.api.run(&w.a_token, id).await;
        assert_eq!(r["status"], "running", "{id}: {r}");
        w.api
            .post(
                Some(&w.a_token),
                &format!("/v1/runs/{id}/cancel"),
                &json!({}),
            )
            .await
            .ok("cancel a backfilled run");
    }
    let (_, page, _) = get(base, jar, &to).await;
    assert!(page.contains("Backfilled: 3 fire times"), "{page}");
    assert!(page.contains("3 fire times, 0 runs to start"), "{page}");
    assert!(
        !page.contains("confirm-backfill"),
        "nothing left to start: {page}"
    );
}

/// The flows pages as tenant A (`jar`) and B (`b`): versions with their
/// runs counted as the run list finds them, a version's steps, IR and
/// source (escaped), older versions; none of it for B.
async fn flows_over_http(w: &World, base: &str, jar: &mut Jar, b: &mut Jar) {
    let (status, page, _) = get(base, jar, "/ui/flows").await;
    assert_eq!(status, 200, "{page}");
    for f in ["Retrain", "Long", "Flaky"] {
        assert!(page.contains(&format!("/ui/flows/acme/{f}")), "{f}: {page}");
    }
    assert!(!page.contains("globex"), "{page}");
    let (_, b_page, _) = get(base, b, "/ui/flows").await;
    assert!(
        b_page.contains("/ui/flows/globex/Retrain") && !b_page.contains("acme"),
        "{b_page}"
    );
    for path in ["/ui/flows/acme/Retrain", "/ui/flows/acme/Nope"] {
        let (status, _, _) = get(base, b, path).await;
        assert_eq!(status, 404, "{path} as B");
    }
    let (status, _, _) = get(base, b, "/ui/flows?tenant=acme").await;
    assert_eq!(status, 403);

    // Retrain's one version: its runs as many as the run list has.
    let (status, page, _) = get(base, jar, "/ui/flows/acme/Retrain").await;
    assert_eq!(status, 200, "{page}");
    let head = w.api.get(Some(&w.a_token), "/v1/flows").await.ok("flows");
    let version = head
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|f| f["name"] == "Retrain" && f["head"] == true)
        })
        .map(|f| f["version"].as_str().expect("version").to_string())
        .expect("Retrain's head");
    let listed = w
        .api
        .get(
            Some(&w.a_token),
            &format!("/v1/runs?flow=Retrain&version={version}&limit=200"),
        )
        .await
        .ok("runs on the version");
    let n = listed["items"].as_array().map_or(0, Vec::len);
    assert!(n >= 4, "{listed}");
    assert!(
        page.contains(&format!("aria-label=\"{n} runs on version")),
        "{n} runs: {page}"
    );
    assert!(
        page.contains(&format!("<code id=\"flow-version\">{version}</code>")),
        "{page}"
    );
    // The graph, the steps with where they are written, the source and the IR.
    assert_eq!(page.matches("<g class=\"node st-step").count(), 5, "{page}");
    assert!(page.contains("console.eflow:"), "{page}");
    assert!(page.contains("flow Retrain(model_name: String"), "{page}");
    assert!(
        page.contains("&quot;contracts&quot;") || page.contains("&#34;contracts&#34;"),
        "{page}"
    );

    // A second version of Long, with markup in a comment: shown as text.
    let v2 = SOURCE.replace(
        "flow Long(x: Int = 1) -> Int {",
        "// <script>alert(1)</script>\nflow Long(x: Int = 2) -> Int {",
    );
    w.api
        .deploy_source(&w.a_token, &[("console.eflow", &v2)])
        .await;
    let (_, page, _) = get(base, jar, "/ui/flows/acme/Long").await;
    assert_eq!(page.matches("<tr data-version=").count(), 2, "{page}");
    assert!(!page.contains("<script>alert"), "{page}");
    assert!(
        page.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{page}"
    );
    assert!(page.contains("(the head: new runs start on it)"), "{page}");
    // The newest first: the new head with no run, the old one with the runs
    // the run list finds on it (the long run and the backfilled ones).
    let counts: Vec<&str> = page
        .split("aria-label=\"")
        .skip(1)
        .filter(|s| s.contains(" runs on version "))
        .map(|s| &s[..s.find(' ').expect("a count")])
        .collect();
    let old = page
        .split("<tr data-version=\"")
        .nth(2)
        .map(|s| s[..s.find('"').expect("end")].to_string())
        .expect("the old version");
    let on_old = w
        .api
        .get(
            Some(&w.a_token),
            &format!("/v1/runs?flow=Long&version={old}&limit=200"),
        )
        .await
        .ok("runs on the old version");
    let on_old = on_old["items"].as_array().map_or(0, Vec::len).to_string();
    assert_eq!(counts, ["0", on_old.as_str()], "{page}");
    assert_ne!(on_old, "0");
    let (status, page, _) = get(base, jar, &format!("/ui/flows/acme/Long?version={old}")).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&format!("<code id=\"flow-version\">{old}</code>")),
        "{page}"
    );
    assert!(!page.contains("(the head: new runs start on it)"), "{page}");
    assert!(
        page.contains("flow Long(x: Int = 1)"),
        "the old source: {page}"
    );
    let (_, page, _) = get(base, jar, "/ui/flows/acme/Long?limit=1").await;
    assert_eq!(page.matches("<tr data-version=").count(), 1, "{page}");
    let next = page
        .split("href=\"")
        .find(|s| s.starts_with("/ui/flows/acme/Long?") && s.contains("after="))
        .map(|s| s[..s.find('"').expect("end")].replace("&#38;", "&"))
        .unwrap_or_else(|| panic!("a link to older versions: {page}"));
    let (_, page, _) = get(base, jar, &next).await;
    assert!(
        page.contains(&format!("<tr data-version=\"{old}\"")),
        "{page}"
    );
    let (status, _, _) = get(base, jar, "/ui/flows/acme/Long?version=sha256:nope").await;
    assert_eq!(status, 404);
}

/// The lineage pages as tenant A (`jar`) and B (`b`): a model registered by
/// an approved run, then looked up and promoted by another; none of it for B.
/// The population page: a flow picked, its kept counts by status and
/// version (each a link that filters), its keys with their latest runs,
/// every filter in the URL, pages; tenant B sees none of A's keys.
async fn population_over_http(w: &World, base: &str, jar: &mut Jar, b: &mut Jar) {
    let (status, page, _) = get(base, jar, "/ui/population").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"pick-a-flow\""), "{page}");
    assert!(
        page.contains("<option value=\"Retrain\">Retrain</option>"),
        "{page}"
    );
    assert!(
        page.contains("href=\"/ui/population\" aria-current=\"page\""),
        "{page}"
    );
    let (status, page, _) = get(base, jar, "/ui/population?flow=Retrain").await;
    assert_eq!(status, 200, "{page}");
    // Four models; each count links to its keys.
    assert!(page.contains("4 keys of Retrain"), "{page}");
    assert!(
        page.contains("href=\"/ui/population?flow=Retrain&#38;status="),
        "{page}"
    );
    for (i, key) in ["churn", "fraud", "ltv", "wide"].iter().enumerate() {
        assert!(page.contains(&format!("<td>{key}</td>")), "{key}: {page}");
        let at = page.find(&format!("<td>{key}</td>")).unwrap();
        if i > 0 {
            let before = ["churn", "fraud", "ltv", "wide"][i - 1];
            assert!(
                page.find(&format!("<td>{before}</td>")).unwrap() < at,
                "by key: {page}"
            );
        }
    }
    let churn = &w.retrain[0];
    assert!(
        page.contains(&format!("href=\"/ui/runs/{churn}\"")),
        "{page}"
    );
    // The failed model, by the failed-in-a-row filter; none twice.
    let (_, page, _) = get(base, jar, "/ui/population?flow=Flaky&failed_in_a_row=1").await;
    assert!(page.contains("<td>flaky</td>"), "{page}");
    assert!(
        page.contains(&format!("href=\"/ui/runs/{}\"", w.failed)),
        "{page}"
    );
    // Its filter's bulk actions: over the population, each key's latest run.
    let retry =
        "/ui/bulk/new?action=retry&#38;over=population&#38;flow=Flaky&#38;failed_in_a_row=1";
    assert!(page.contains(retry), "{page}");
    let (status, page, _) = get(base, jar, &retry.replace("&#38;", "&")).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<strong>1</strong> run"), "{page}");
    assert!(page.contains("the latest run of each key"), "{page}");
    assert!(
        page.contains("<input type=\"hidden\" name=\"over\" value=\"population\">"),
        "{page}"
    );
    let (_, page, _) = get(base, jar, "/ui/population?flow=Flaky&failed_in_a_row=2").await;
    assert!(page.contains("id=\"no-members\""), "{page}");
    assert!(
        !page.contains("bulk-actions"),
        "no key, no bulk action: {page}"
    );
    let (_, page, _) = get(base, jar, "/ui/population?flow=Retrain&status=failed").await;
    assert!(page.contains("id=\"no-members\""), "{page}");
    // Pages of two: the next page's link carries the filters and a cursor.
    let (_, page, _) = get(base, jar, "/ui/population?flow=Retrain&limit=2").await;
    let next = page
        .split('"')
        .find(|s| s.starts_with("/ui/population?") && s.contains("cursor="))
        .unwrap_or_else(|| panic!("a next page: {page}"))
        .replace("&#38;", "&");
    assert!(
        next.contains("flow=Retrain") && next.contains("limit=2"),
        "{next}"
    );
    let (_, second, _) = get(base, jar, &next).await;
    assert!(
        second.contains("<td>ltv</td>") && second.contains("<td>wide</td>"),
        "{second}"
    );
    assert!(!second.contains("<td>churn</td>"), "{second}");
    // Bad filters are a page that says what to change.
    let (status, _, _) = get(base, jar, "/ui/population?flow=Retrain&failed_in_a_row=0").await;
    assert_eq!(status, 400);
    let (status, _, _) = get(base, jar, "/ui/population?flow=Retrain&failed_in_a_row=x").await;
    assert_eq!(status, 400);
    // Tenant B: its own (none), never A's.
    let (status, page, _) = get(base, b, "/ui/population?flow=Retrain").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("0 keys of Retrain") && !page.contains("churn"),
        "{page}"
    );
    let (status, _, _) = get(base, b, "/ui/population?flow=Retrain&tenant=acme").await;
    assert_eq!(status, 403);
}

async fn lineage_over_http(w: &World, base: &str, jar: &mut Jar, b: &mut Jar) {
    let (_, page, _) = get(base, jar, "/ui/lineage").await;
    assert!(
        page.contains("no-entries"),
        "nothing registered yet: {page}"
    );
    let decided = w
        .api
        .post(
            Some(&w.a_token),
            &format!("/v1/runs/{}/approvals/decision", w.retrain[0]),
            &json!({ "approve": true }),
        )
        .await;
    assert!(decided.status < 300, "{}", decided.text);
    let done = w.api.wait_finished(&w.a_token, &w.retrain[0]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let ship = w
        .api
        .start(&w.a_token, "Ship", json!({ "name": "churn" }))
        .await;
    let ship = ship["id"].as_str().expect("id").to_string();
    let shipped = w.api.wait_finished(&w.a_token, &ship).await;
    assert_eq!(shipped["status"], "succeeded", "{shipped}");

    let (status, page, _) = get(base, jar, "/ui/lineage").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("href=\"/ui/lineage/model/churn\""), "{page}");
    let (status, page, _) = get(base, jar, "/ui/lineage/model/churn").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-version=\"1\""), "{page}");
    assert!(
        page.contains(&format!(
            "step <strong>version</strong> of run <a href=\"/ui/runs/{}\">",
            w.retrain[0]
        )),
        "made by: {page}"
    );
    assert!(page.contains("Production"), "promoted: {page}");
    for (step, action) in [("staged", "look up"), ("shipped", "promote")] {
        assert!(
            page.contains(&format!(
                "<td><a href=\"/ui/runs/{ship}\">{ship}</a></td><td>{step}</td><td>{action}</td>"
            )),
            "{step} {action}: {page}"
        );
    }
    let (status, page, _) = get(base, jar, "/ui/lineage/model/churn?version=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page.matches("<td>look up</td>").count(), 1, "{page}");
    let (status, _, _) = get(base, jar, "/ui/lineage/model/churn?version=9").await;
    assert_eq!(status, 404);
    let (status, _, _) = get(base, jar, "/ui/lineage/model/nope").await;
    assert_eq!(status, 404);
    // B: nothing of A's.
    let (_, page, _) = get(base, b, "/ui/lineage").await;
    assert!(!page.contains("churn"), "{page}");
    let (status, _, _) = get(base, b, "/ui/lineage/model/churn").await;
    assert_eq!(status, 404);
    let (status, _, _) = get(base, b, "/ui/lineage/model/churn?tenant=acme").await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_login_is_the_admin_on_loopback_and_refused_elsewhere() {
    let out = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(["serve", "--ui-no-login", "--listen", "0.0.0.0:0", "--data"])
        .arg(std::env::temp_dir().join(format!("eflow-ui-refused-{}", std::process::id())))
        .output()
        .expect("run eflow serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--ui-no-login") && stderr.contains("loopback"),
        "{stderr}"
    );

    let server = eflow("ui-open", &["--ui-no-login"]).await;
    let base = format!("http://{}", server.addr);
    let mut jar = Jar::default();
    let (status, page, _) = get(&base, &mut jar, "/ui").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("(admin)"), "{page}");
    let api = Api::new(base.clone());
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("console.eflow", SOURCE)])
        .await;
    let run = api.start(&token, "Long", json!({})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let (status, page, _) = get(&base, &mut jar, &format!("/ui/runs/{run}")).await;
    assert_eq!(status, 200, "{page}");
    // Forms still need the CSRF token.
    let cancel = format!("/ui/runs/{run}/cancel");
    let (status, _) = post(&base, &mut jar, &cancel, &[("csrf", "forged")]).await;
    assert_eq!(status, 403);
    assert_eq!(api.run(&token, &run).await["status"], "running");
    let (status, _) = post(&base, &mut jar, &cancel, &[("csrf", &csrf_of(&page))]).await;
    assert_eq!(status, 303);
    let view = api.wait_finished(&token, &run).await;
    assert_eq!(view["status"], "cancelled", "{view}");
    let events = api
        .get(Some(&token), &format!("/v1/runs/{run}/events"))
        .await
        .ok("events");
    assert!(
        events
            .to_string()
            .contains("cancelled in the web console by console (no login)"),
        "{events}"
    );
}

// ---- the browser ------------------------------------------------------------------

fn skip_or_fail(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("the console's browser test cannot run in CI: {why}");
    }
    eprintln!("skipped: the console's browser test cannot run: {why}");
}

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui")
}

/// A virtualenv with Playwright (its driver comes in the wheel; no browser
/// is downloaded: the test uses Debian's chromium).
fn venv() -> Result<PathBuf, String> {
    let requirements =
        std::fs::read_to_string(ui_dir().join("requirements.txt")).map_err(|e| e.to_string())?;
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-venv");
    let python = dir.join("bin/python");
    let stamp = dir.join("requirements.txt");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == requirements) {
        return Ok(python);
    }
    let system = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let made = Command::new(&system)
        .args(["-m", "venv", "--clear"])
        .arg(&dir)
        .status()
        .map_err(|e| format!("`{system}` is not available: {e}"))?;
    if !made.success() {
        return Err(format!(
            "`{system} -m venv` failed (Debian: apt-get install -y python3-venv)"
        ));
    }
    let installed = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(ui_dir().join("requirements.txt"))
        .status()
        .map_err(|e| e.to_string())?;
    if !installed.success() {
        return Err("pip could not install runtime/tests/ui/requirements.txt".into());
    }
    std::fs::write(&stamp, requirements).map_err(|e| e.to_string())?;
    Ok(python)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    let chromium = std::env::var("EFLOW_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return skip_or_fail(&format!(
            "no {chromium} (Debian: apt-get install -y chromium)"
        ));
    }
    let python = match venv() {
        Ok(p) => p,
        Err(why) => return skip_or_fail(&why),
    };
    let server = eflow("ui-browser", &[]).await;
    let w = world(&server).await;
    let mut a_runs = w.retrain.clone();
    a_runs.extend([w.wide.clone(), w.long.clone(), w.failed.clone()]);
    let facts = json!({
        "admin_token": ADMIN,
        "a_token": w.a_token,
        "b_token": w.b_token,
        "a_runs": a_runs,
        "retrain": w.retrain,
        "wide": w.wide,
        "wide_children": WIDE,
        "long": w.long,
        "failed": { "id": w.failed, "code": w.failed_code },
        "b_run": w.b_run,
        "b_run_admin": w.b_run,
        "yearly": w.yearly,
    });
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).expect("screenshots dir");
    let script = ui_dir().join("console.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .env("EFLOW_URL", format!("http://{}", server.addr))
            .env("EFLOW_UI_FACTS", facts.to_string())
            .env("EFLOW_UI_SHOTS", &shots)
            .env("EFLOW_UI_AXE", ui_dir().join("axe.min.js"))
            .env("EFLOW_CHROMIUM", chromium)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .map(|o| (o, server))
    })
    .await
    .expect("join")
    .expect("run the browser script");
    let (out, _server) = out;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the browser script failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");

    // What the browser did, as the API sees it.
    let done: Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("the script's summary: {stdout}"));
    let decision = |run: &str| {
        let api = w.api.clone();
        let token = w.a_token.clone();
        let run = run.to_string();
        async move {
            let all = api
                .get(Some(&token), "/v1/approvals?pending=false")
                .await
                .ok("approvals");
            all.as_array()
                .and_then(|a| a.iter().find(|x| x["run"] == run.as_str()).cloned())
                .map(|a| a["decision"].clone())
                .unwrap_or(Value::Null)
        }
    };
    let approved = decision(done["approved"].as_str().expect("approved")).await;
    assert_eq!(approved["outcome"], "Approved", "{approved}");
    assert_eq!(
        approved["comment"], "looks good: AUC above the bar",
        "{approved}"
    );
    let rejected = decision(done["rejected"].as_str().expect("rejected")).await;
    assert_eq!(rejected["outcome"], "Rejected", "{rejected}");
    assert_eq!(w.api.run(&w.a_token, &w.long).await["status"], "cancelled");
    // The schedule paused in the browser is paused; the backfill started its runs.
    let every = done["paused_schedule"].as_str().expect("paused schedule");
    let all = w
        .api
        .get(Some(&w.a_token), "/v1/schedules?key=every-second")
        .await
        .ok("schedules");
    assert_eq!(all[0]["id"], every, "{all}");
    assert_eq!(all[0]["paused"], true, "{all}");
    let backfilled = done["backfilled"].as_array().expect("backfilled runs");
    assert_eq!(backfilled.len(), 3, "{done}");
    for id in backfilled {
        let id = id.as_str().expect("a run id");
        assert!(id.starts_with(&format!("{}.", w.yearly)), "{id}");
        assert_eq!(w.api.run(&w.a_token, id).await["status"], "running");
    }
    // The bulk retry made in the browser retried every failed run once, naming the job.
    let job = done["bulk_job"].as_str().expect("bulk job");
    let retried = done["bulk_retried"].as_array().expect("bulk retried runs");
    assert!(!retried.is_empty(), "{done}");
    for run in retried {
        let run = run.as_str().expect("a run id");
        let events = w
            .api
            .get(
                Some(&w.a_token),
                &format!("/v1/runs/{run}/events?limit=1000"),
            )
            .await
            .ok("events");
        let by_job = events
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| {
                e["event"]["type"] == "retry_requested"
                    && e["event"]["reason"]
                        == format!("bulk {job}: retried in the browser").as_str()
            })
            .count();
        assert_eq!(by_job, 1, "{run}");
    }
    // The forged cancel changed nothing.
    assert_eq!(
        w.api.run(&w.a_token, &w.retrain[2]).await["status"],
        "running"
    );
}
