//! The `eflow` binary: `schedule preview` offline, and the client commands
//! against a server started in the test.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::{Value, json};

const EFLOW: &str = env!("CARGO_BIN_EXE_eflow");

fn eflow(args: &[&str]) -> Output {
    Command::new(EFLOW)
        .args(args)
        .env_remove("EFLOW_SERVER")
        .env_remove("EFLOW_TOKEN")
        .env("EFLOW_LOG", "error")
        .output()
        .expect("the eflow binary runs")
}

async fn eflow_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        eflow(&args)
    })
    .await
    .expect("the blocking task")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

#[test]
fn preview_follows_new_york_across_the_dst_change() {
    let o = eflow(&[
        "schedule",
        "preview",
        "0 9 * * MON-FRI",
        "--tz",
        "America/New_York",
        "--from",
        "2026-03-06T00:00:00Z",
        "--count",
        "3",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    let lines: Vec<String> = text(&o.stdout).lines().map(str::to_string).collect();
    // Friday 6 March, 09:00 EST (UTC-5); clocks go forward on Sunday 8 March;
    // Monday 9 and Tuesday 10 March, 09:00 EDT (UTC-4).
    let expected = [
        "2026-03-06T14:00:00Z",
        "2026-03-09T13:00:00Z",
        "2026-03-10T13:00:00Z",
    ];
    assert_eq!(lines.len(), 3, "{}", show(&o));
    for (line, want) in lines.iter().zip(expected) {
        let got = eflow_core::time::parse_rfc3339(line)
            .unwrap_or_else(|| panic!("`{line}` is not RFC 3339: {}", show(&o)));
        let want_ms = eflow_core::time::parse_rfc3339(want).unwrap();
        assert_eq!(got, want_ms, "`{line}` should be {want}: {}", show(&o));
    }
}

#[test]
fn preview_of_an_expression_that_never_fires_again_prints_nothing() {
    let o = eflow(&[
        "schedule",
        "preview",
        "0 0 0 1 1 ? 2020",
        "--from",
        "2026-01-01T00:00:00Z",
        "--count",
        "3",
    ]);
    assert!(o.status.success(), "{}", show(&o));
    assert_eq!(text(&o.stdout).trim(), "", "{}", show(&o));
}

#[test]
fn output_to_a_reader_that_goes_away_ends_quietly() {
    // `eflow schedule preview … | head -1`: the pipe closes after the first line.
    let mut child = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(["schedule", "preview", "* * * * * *", "--count", "100000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("eflow starts");
    let mut stdout = child.stdout.take().expect("piped");
    let mut first = [0u8; 10];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("the first line starts");
    drop(stdout);
    let o = child.wait_with_output().expect("eflow ends");
    let err = text(&o.stderr);
    assert!(
        !err.contains("panicked"),
        "no panic on a closed pipe: {err}"
    );
    assert!(o.status.success(), "a closed pipe is not an error: {err}");
}

#[test]
fn preview_refuses_invalid_expressions_and_zones() {
    for (cron, tz, mention) in [
        ("not a cron", "UTC", None),
        ("61 * * * *", "UTC", None),
        (
            "0 9 * * MON-FRI",
            "Mars/Olympus_Mons",
            Some("Mars/Olympus_Mons"),
        ),
    ] {
        let o = eflow(&["schedule", "preview", cron, "--tz", tz, "--count", "3"]);
        assert!(
            !o.status.success(),
            "`{cron}` in {tz} should fail: {}",
            show(&o)
        );
        let err = text(&o.stderr);
        assert!(err.contains("error"), "a message on stderr: {}", show(&o));
        assert!(err.trim().len() > 10, "a clear message: {}", show(&o));
        if let Some(m) = mention {
            assert!(err.contains(m), "the message names `{m}`: {}", show(&o));
        }
        assert_eq!(
            text(&o.stdout).trim(),
            "",
            "nothing on stdout: {}",
            show(&o)
        );
    }
    let o = eflow(&["schedule", "preview", "* * * * *", "--from", "last tuesday"]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("--from"), "{}", show(&o));
}

const FLOW: &str = r#"
remote step Square(x: Int) -> Int

flow Double(x: Int) -> Int {
    let y = Square(x: x)
    return y
}

remote step Boom(x: Int) -> Int

flow Fails(x: Int) -> Int {
    let b = Boom(x: x)
    return b
}

bindings dev {
    Square = sim { duration: 50ms, failure_rate: 0.0 }
    Boom = sim { duration: 10ms, failure_rate: 1.0 }
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_against_a_server() {
    let s = TestServer::start("cli").await;
    let server = s.addr();
    let conn = |v: Vec<&str>| -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(str::to_string).collect();
        v.extend([
            "--server".to_string(),
            server.clone(),
            "--token".to_string(),
            ADMIN.to_string(),
        ]);
        v
    };

    // tenant create
    let o = eflow_async(conn(vec!["tenant", "create", "acme", "-o", "json"])).await;
    assert!(o.status.success(), "{}", show(&o));
    let created: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    assert_eq!(created["tenant"]["id"], "acme", "{}", show(&o));
    let token = created["token"].as_str().expect("a token").to_string();
    // The same again is refused, with the server's message.
    let o = eflow_async(conn(vec!["tenant", "create", "acme"])).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("tenant_exists"), "{}", show(&o));
    // With egress rules, set by the admin (docs/security.md).
    let o = eflow_async(conn(vec![
        "tenant",
        "create",
        "lab",
        "--allow-egress",
        "127.0.0.1",
        "--allow-egress",
        "*.internal",
        "-o",
        "json",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    let lab: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    assert_eq!(
        lab["tenant"]["allow_egress"],
        serde_json::json!(["127.0.0.1", "*.internal"]),
        "{}",
        show(&o)
    );
    // The history's retention of a tenant: its own, then the server's again.
    let o = eflow_async(conn(vec![
        "tenant",
        "update",
        "lab",
        "--history-retention",
        "30d",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("history kept 30d"), "{}", show(&o));
    let o = eflow_async(conn(vec!["tenant", "list"])).await;
    assert!(text(&o.stdout).contains("30d"), "{}", show(&o));
    let o = eflow_async(conn(vec![
        "tenant",
        "update",
        "lab",
        "--history-retention",
        "default",
        "-o",
        "json",
    ]))
    .await;
    let lab: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    assert_eq!(lab["history_retention"], "400d", "{}", show(&o));
    assert_eq!(
        lab["allow_egress"],
        serde_json::json!(["127.0.0.1", "*.internal"])
    );
    let o = eflow_async(conn(vec!["tenant", "update", "lab"])).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("nothing to change"),
        "{}",
        show(&o)
    );

    // deploy (as the admin, for the tenant)
    let file = s.dir.join("double.eflow");
    std::fs::write(&file, FLOW).expect("write the flow");
    let file = file.display().to_string();
    let o = eflow_async(conn(vec![
        "deploy", &file, "--tenant", "acme", "-o", "json",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    let d: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    assert_eq!(d["tenant"], "acme");
    assert_eq!(d["flows"][0]["name"], "Double", "{d}");
    // The table form names the flow.
    let o = eflow_async(conn(vec!["deploy", &file, "--tenant", "acme"])).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("Double"), "{}", show(&o));
    // A file that does not compile deploys nothing.
    let bad = s.dir.join("bad.eflow");
    std::fs::write(&bad, "flow Broken( {").expect("write");
    let o = eflow_async(conn(vec![
        "deploy",
        &bad.display().to_string(),
        "--tenant",
        "acme",
    ]))
    .await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("nothing was deployed"),
        "{}",
        show(&o)
    );

    // run start, with the tenant's own token
    let tenant_conn = |v: Vec<&str>| -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(str::to_string).collect();
        v.extend([
            "--server".to_string(),
            server.clone(),
            "--token".to_string(),
            token.clone(),
        ]);
        v
    };
    let o = eflow_async(tenant_conn(vec![
        "run",
        "start",
        "Double",
        "--input",
        r#"{"x": 3}"#,
        "--id",
        "cli-run-1",
        "-o",
        "json",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    let run: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    assert_eq!(run["id"], "cli-run-1", "{run}");
    assert_eq!(run["tenant"], "acme");
    assert_eq!(run["input"], json!({"x": 3}));
    // Bad input JSON is refused by the CLI itself.
    let o = eflow_async(tenant_conn(vec![
        "run", "start", "Double", "--input", "{x: 3",
    ]))
    .await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("--input"), "{}", show(&o));

    // run get -o json, until it succeeded
    s.api.wait_finished(&token, "cli-run-1").await;
    let o = eflow_async(tenant_conn(vec!["run", "get", "cli-run-1", "-o", "json"])).await;
    assert!(o.status.success(), "{}", show(&o));
    let got: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    assert_eq!(got["status"], "succeeded", "{got}");
    assert_eq!(got["flow"], "Double");
    assert_eq!(got["steps"][0]["id"], "y", "{got}");
    assert_eq!(got["steps"][0]["status"], "succeeded", "{got}");
    let api_view = s.api.run(&token, "cli-run-1").await;
    assert_eq!(got, api_view, "the CLI prints what the API returns");
    // The table form.
    let o = eflow_async(tenant_conn(vec!["run", "get", "cli-run-1"])).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains("succeeded"), "{}", show(&o));
    // A run that does not exist.
    let o = eflow_async(tenant_conn(vec!["run", "get", "nope", "-o", "json"])).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("not_found"), "{}", show(&o));

    // run retry: a failed run goes on (`Boom` always fails: it fails again);
    // one that succeeded is refused.
    let o = eflow_async(tenant_conn(vec![
        "run",
        "start",
        "Fails",
        "--input",
        r#"{"x": 1}"#,
        "--id",
        "cli-fails",
        "--key",
        "model-x",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    let failed = s.api.wait_finished(&token, "cli-fails").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let o = eflow_async(tenant_conn(vec![
        "run",
        "retry",
        "cli-fails",
        "--reason",
        "try again",
        "-o",
        "json",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    let retried: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    assert_eq!(retried["id"], "cli-fails", "{retried}");
    assert_eq!(retried["retries"], 1, "{retried}");
    s.api.wait_finished(&token, "cli-fails").await;
    let o = eflow_async(tenant_conn(vec!["run", "get", "cli-fails"])).await;
    assert!(text(&o.stdout).contains("retried once"), "{}", show(&o));
    assert!(text(&o.stdout).contains("key model-x"), "{}", show(&o));
    // The flow's population: the key with its latest run, failed (a retry
    // that failed again is still one run).
    s.api.history_caught_up().await;
    let o = eflow_async(tenant_conn(vec!["population", "--flow", "Fails"])).await;
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(out.contains("1 keys of Fails: 1 failed"), "{}", show(&o));
    assert!(
        out.contains("model-x") && out.contains("cli-fails"),
        "{}",
        show(&o)
    );
    let o = eflow_async(tenant_conn(vec![
        "population",
        "--flow",
        "Fails",
        "--failed-in-a-row",
        "1",
        "-o",
        "json",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    let pop: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    assert_eq!(pop["counts"]["by_status"], json!({"failed": 1}), "{pop}");
    assert_eq!(pop["page"]["items"][0]["key"], "model-x", "{pop}");
    assert_eq!(pop["page"]["items"][0]["failed_in_a_row"], 1, "{pop}");
    let o = eflow_async(tenant_conn(vec!["run", "retry", "cli-run-1"])).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("not_failed"), "{}", show(&o));
    assert!(text(&o.stderr).contains("has succeeded"), "{}", show(&o));
    // A wrong token.
    let o = eflow_async(vec![
        "run".into(),
        "get".into(),
        "cli-run-1".into(),
        "--server".into(),
        server.clone(),
        "--token".into(),
        "wrong".into(),
    ])
    .await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("unauthenticated"), "{}", show(&o));
    // No server there.
    let o = eflow(&[
        "run",
        "get",
        "x",
        "--server",
        "http://127.0.0.1:9",
        "--token",
        "t",
    ]);
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("cannot reach"), "{}", show(&o));

    // cluster status: this one process, alive, holding every shard.
    let o = eflow_async(conn(vec!["cluster", "status", "-o", "json"])).await;
    assert!(o.status.success(), "{}", show(&o));
    let cluster: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    let members = cluster["members"].as_array().expect("members");
    assert_eq!(members.len(), 1, "{cluster}");
    assert_eq!(members[0]["alive"], true, "{cluster}");
    let me = members[0]["id"].as_str().expect("an id");
    let shards = cluster["shards"].as_array().expect("shards");
    assert!(!shards.is_empty(), "{cluster}");
    for sh in shards {
        assert_eq!(
            sh["owner"], me,
            "every shard held by the one engine: {cluster}"
        );
        assert_eq!(sh["held"], true, "{cluster}");
    }
    assert_eq!(cluster["consumers"][0]["name"], "history", "{cluster}");
    let o = eflow_async(conn(vec!["cluster", "status"])).await;
    assert!(o.status.success(), "{}", show(&o));
    let out = text(&o.stdout);
    assert!(
        out.contains(me) && out.contains(&format!("0-{}", shards.len() - 1)),
        "members and shard ranges: {out}"
    );
    // A tenant's token may not see it.
    let o = eflow_async(vec![
        "cluster".into(),
        "status".into(),
        "--server".into(),
        server.clone(),
        "--token".into(),
        token.clone(),
    ])
    .await;
    assert!(!o.status.success(), "{}", show(&o));

    s.stop().await;
}

/// Every `$ eflow schedule preview …` example in `docs/language.md`, run as
/// written: it prints exactly the lines the reference shows under it.
#[test]
fn the_references_preview_examples_print_what_it_shows() {
    let reference =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/language.md"))
            .expect("docs/language.md");
    let mut examples: Vec<(String, Vec<String>)> = Vec::new();
    // The example whose output the lines that follow are, in this block.
    let mut current: Option<usize> = None;
    for line in reference.lines() {
        if line.starts_with("```") {
            current = None;
        } else if let Some(command) = line.strip_prefix("$ eflow ") {
            examples.push((command.to_string(), Vec::new()));
            current = Some(examples.len() - 1);
        } else if let Some(i) = current {
            examples[i].1.push(line.to_string());
        }
    }
    examples.retain(|(c, _)| c.starts_with("schedule preview"));
    assert!(examples.len() >= 3, "{examples:?}");
    for (command, want) in examples {
        // Words, with single quotes around the cron expression.
        let mut args = Vec::new();
        let mut rest = command.as_str();
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                break;
            }
            if let Some(r) = rest.strip_prefix('\'') {
                let (quoted, after) = r.split_once('\'').expect("a closing quote");
                args.push(quoted.to_string());
                rest = after;
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                args.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = eflow(&args);
        assert!(o.status.success(), "eflow {command}: {}", show(&o));
        let got: Vec<String> = text(&o.stdout).lines().map(str::to_string).collect();
        assert_eq!(got, want, "eflow {command}");
    }
}

const GUARDED: &str = r#"
remote step Work(n: Float) -> Int

flow Nightly(n: Float = 1.0) -> Int {
    schedule "0 2 * * *"
    let w = Work(n: n)
    return w
}

bindings dev {
    Work = sim { duration: 1h, failure_rate: 0.0 }
}
"#;

/// `eflow deploy` runs `eflowc diff`'s check against the deployed versions: a
/// breaking change is refused, listing what breaks, the runs in progress and the
/// schedules, and deploys nothing; `--allow-breaking` deploys it; a compatible
/// change deploys without asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_refuses_breaking_changes_unless_allowed() {
    let s = TestServer::start("breaking").await;
    let server = s.addr();
    let conn = |v: Vec<&str>| -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(str::to_string).collect();
        v.extend([
            "--server".into(),
            server.clone(),
            "--token".into(),
            ADMIN.into(),
        ]);
        v
    };
    let o = eflow_async(conn(vec!["tenant", "create", "acme"])).await;
    assert!(o.status.success(), "{}", show(&o));
    let write = |name: &str, text: &str| {
        let p = s.dir.join(name);
        std::fs::write(&p, text).expect("write");
        p.display().to_string()
    };
    let v1 = write("v1.eflow", GUARDED);
    let o = eflow_async(conn(vec!["deploy", &v1, "--tenant", "acme"])).await;
    assert!(o.status.success(), "{}", show(&o));
    let o = eflow_async(conn(vec![
        "run", "start", "Nightly", "--tenant", "acme", "--input", "{}",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));
    let flows = |o: Output| text(&o.stdout);
    let before = flows(eflow_async(conn(vec!["flows", "--tenant", "acme", "-o", "json"])).await);

    // A narrowed input: refused, saying what, for whom, the run and the schedule.
    let v2 = write("v2.eflow", &GUARDED.replace("n: Float = 1.0", "n: Int = 1"));
    let o = eflow_async(conn(vec!["deploy", &v2, "--tenant", "acme"])).await;
    assert!(!o.status.success(), "{}", show(&o));
    let err = text(&o.stderr);
    for want in [
        "breaking_change",
        "B0002",
        "parameter `n` of flow `Nightly`",
        "1 run(s) in progress",
        "acme.Nightly.0",
        "--allow-breaking",
    ] {
        assert!(err.contains(want), "{want}: {}", show(&o));
    }
    let after = flows(eflow_async(conn(vec!["flows", "--tenant", "acme", "-o", "json"])).await);
    assert_eq!(before, after, "nothing was deployed");

    // Allowed: deployed.
    let o = eflow_async(conn(vec![
        "deploy",
        &v2,
        "--tenant",
        "acme",
        "--allow-breaking",
    ]))
    .await;
    assert!(o.status.success(), "{}", show(&o));

    // A compatible change (a step's input) needs no flag.
    let v3 = write(
        "v3.eflow",
        &GUARDED
            .replace("n: Float = 1.0", "n: Int = 1")
            .replace("Work(n: n)", "Work(n: 2.0)"),
    );
    let o = eflow_async(conn(vec!["deploy", &v3, "--tenant", "acme"])).await;
    assert!(o.status.success(), "{}", show(&o));
}

/// `eflow bulk`: a bulk retry previewed and refused without `--yes` when
/// nobody can answer the prompt, then started, followed to its end and
/// listed; a finished job cannot be paused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_commands_preview_start_and_follow_a_job() {
    let s = TestServer::start("cli-bulk").await;
    let server = s.addr();
    let conn = |v: Vec<&str>| -> Vec<String> {
        let mut v: Vec<String> = v.into_iter().map(str::to_string).collect();
        v.extend([
            "--server".to_string(),
            server.clone(),
            "--token".to_string(),
            ADMIN.to_string(),
        ]);
        v
    };
    let token = s.api.create_tenant("acme", serde_json::json!({})).await;
    s.api.deploy_source(&token, &[("f.eflow", FLOW)]).await;
    for x in 0..3 {
        let run = s
            .api
            .start(&token, "Fails", serde_json::json!({"x": x}))
            .await;
        let id = run["id"].as_str().expect("id").to_string();
        s.api.wait_finished(&token, &id).await;
    }
    let start = |extra: &[&str]| {
        let mut v = vec![
            "bulk", "start", "retry", "--tenant", "acme", "--flow", "Fails", "--status", "failed",
        ];
        v.extend_from_slice(extra);
        conn(v)
    };
    // No terminal to ask: the preview, and nothing started.
    let o = eflow_async(start(&[])).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("retry would touch 3 runs"),
        "{}",
        show(&o)
    );
    assert!(text(&o.stderr).contains("--yes"), "{}", show(&o));
    let listed = s.api.get(Some(&token), "/v1/bulk").await.ok("jobs");
    assert_eq!(listed["items"], serde_json::json!([]), "{listed}");

    let o = eflow_async(start(&["--yes", "--reason", "outage over", "-o", "json"])).await;
    assert!(o.status.success(), "{}", show(&o));
    let job: Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("JSON: {}", show(&o)));
    let id = job["id"].as_str().expect("a job id").to_string();
    assert_eq!(job["reason"], "outage over", "{job}");
    let done = poll_until("the job to end", DEADLINE, || {
        let args = conn(vec!["bulk", "get", &id, "-o", "json"]);
        async move {
            let o = eflow_async(args).await;
            let j: Value = serde_json::from_slice(&o.stdout).ok()?;
            (j["state"] == "done").then_some(j)
        }
    })
    .await;
    assert_eq!(done["acted"], 3, "{done}");
    let o = eflow_async(conn(vec!["bulk", "get", &id])).await;
    assert!(
        text(&o.stdout).contains(&format!("bulk job {id}  done  retry of tenant acme")),
        "{}",
        show(&o)
    );
    assert!(
        text(&o.stdout).contains("selected 3  acted 3  skipped 0  errors 0"),
        "{}",
        show(&o)
    );
    let o = eflow_async(conn(vec!["bulk", "list", "--tenant", "acme"])).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(text(&o.stdout).contains(&id), "{}", show(&o));
    let o = eflow_async(conn(vec!["bulk", "pause", &id])).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("bulk_job_state"), "{}", show(&o));

    // Over a population: each key's latest run; one keyed run failed.
    let run = s
        .api
        .post(
            Some(&token),
            "/v1/runs",
            &serde_json::json!({"flow": "Fails", "input": {"x": 9}, "key": "model-9"}),
        )
        .await
        .ok("a keyed run");
    let keyed = run["id"].as_str().expect("id").to_string();
    s.api.wait_finished(&token, &keyed).await;
    let population = |extra: &[&str]| {
        let mut v = vec!["bulk", "start", "retry", "--population", "--tenant", "acme"];
        v.extend_from_slice(extra);
        conn(v)
    };
    let o = eflow_async(population(&["--flow", "Fails", "--failed-in-a-row", "1"])).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        text(&o.stderr).contains("retry would touch 1 run"),
        "{}",
        show(&o)
    );
    assert!(text(&o.stderr).contains(&keyed), "{}", show(&o));
    let o = eflow_async(population(&["--status", "failed"])).await;
    assert!(
        text(&o.stderr).contains("--population needs --flow"),
        "{}",
        show(&o)
    );
    let o = eflow_async(population(&["--flow", "Fails", "--step", "Boom"])).await;
    assert!(
        text(&o.stderr).contains("--step filters a run list, not a population"),
        "{}",
        show(&o)
    );
    let o = eflow_async(conn(vec![
        "bulk",
        "start",
        "retry",
        "--flow",
        "Fails",
        "--failed-in-a-row",
        "2",
    ]))
    .await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(text(&o.stderr).contains("--population"), "{}", show(&o));
    s.stop().await;
}
