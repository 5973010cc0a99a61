//! Running eflow as an operator does, against the real binary: `eflow
//! migrate` and the schema check on a shared PostgreSQL schema, a whole run on
//! PostgreSQL, options from a config file, roles, and `/metrics`.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::binary::eflow;
use common::postgres::Schema;
use common::{ADMIN, Api, poll_until};
use serde_json::json;

const FLOW: &str = r#"
record Model { auc: Float }

remote step Train(customer: String) -> Model

flow Retrain(customer: String) -> Model {
    let m = Train(customer: customer)
    return m
}

bindings dev {
    Train = sim { duration: 50ms, failure_rate: 0.0, seed: 1 }
}
"#;

fn eflow_cmd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(args)
        .env("EFLOW_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run eflow")
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `eflow serve` with `args` that must fail to start: its output.
fn serve_refused(args: &[&str]) -> Output {
    let dir = common::temp_dir("ops-refused");
    let mut all = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.to_str().expect("utf-8"),
    ];
    all.extend_from_slice(args);
    let mut child = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(&all)
        .env("EFLOW_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start eflow serve");
    // A refusal comes at once; a server that started would serve forever.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("eflow serve {args:?} started, but should have refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let _ = std::fs::remove_dir_all(dir);
    out
}

async fn run_one(api: &Api, token: &str, customer: &str) {
    let id = api
        .start(token, "Retrain", json!({"customer": customer}))
        .await["id"]
        .as_str()
        .expect("an id")
        .to_string();
    let done = api.wait_finished(token, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_then_serve_a_whole_run_on_postgres() {
    let Some(schema) = Schema::create("ops_migrate").await else {
        return;
    };
    let url = schema.url.as_str();
    // A fresh schema: both stores made, the history's numbered apart.
    let o = eflow_cmd(&["migrate", "--store", url, "--history-store", url]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        out.contains("engine store") && out.contains("none -> "),
        "{out}"
    );
    assert!(
        out.contains("history store") && out.contains("-> 1004"),
        "{out}"
    );
    // Again: nothing to do.
    let o = eflow_cmd(&["migrate", "--store", url, "--history-store", url]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("nothing to do")
            .count(),
        2,
        "{}",
        text(&o)
    );

    // The whole embedded server on PostgreSQL: deploy, run, read back.
    let server = eflow(
        "ops-pg",
        &["--store", url, "--history-store", url, "--shards", "4"],
    )
    .await;
    let api = Api::new(format!("http://{}", server.addr));
    let token = api.create_tenant("acme", json!({})).await;
    api.deploy_source(&token, &[("retrain.eflow", FLOW)]).await;
    run_one(&api, &token, "c-1").await;
    run_one(&api, &token, "c-2").await;
    api.history_caught_up().await;
    let runs = api.all_runs(&token, "flow=Retrain").await;
    assert_eq!(runs.len(), 2, "{runs:?}");

    // The shards are held by the one process, in PostgreSQL.
    let cluster = api.get(Some(ADMIN), "/v1/cluster").await.ok("cluster");
    let shards = cluster["shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 4, "{cluster}");
    assert!(shards.iter().all(|s| s["held"] == true), "{cluster}");

    // Its metrics count what it did.
    let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .expect("GET /metrics");
    assert_eq!(metrics.status(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let body = metrics.text().await.expect("body");
    let value = |name: &str| -> f64 {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{body}"))
            .parse()
            .expect("a number")
    };
    assert!(value("eflow_transitions_total") >= 4.0, "{body}");
    assert!(value("eflow_commits_total") >= 1.0, "{body}");
    assert_eq!(value("eflow_shards_held"), 4.0, "{body}");
    assert_eq!(value("eflow_fenced_commits_total"), 0.0, "{body}");
    assert!(value("eflow_commit_seconds_count") >= 1.0, "{body}");
    assert_eq!(value("eflow_outbox_depth"), 0.0, "{body}");
    assert!(
        body.contains("eflow_commit_seconds_bucket{le=\"+Inf\"}"),
        "{body}"
    );
    drop(server);

    // A schema one migration behind: refused, naming the versions and the command.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("connect");
    let latest: i64 =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE version < 1000")
            .fetch_one(&mut conn)
            .await
            .expect("latest");
    let row: (String, Vec<u8>) =
        sqlx::query_as("SELECT description, checksum FROM _sqlx_migrations WHERE version = $1")
            .bind(latest)
            .fetch_one(&mut conn)
            .await
            .expect("row");
    sqlx::query("DELETE FROM _sqlx_migrations WHERE version = $1")
        .bind(latest)
        .execute(&mut conn)
        .await
        .expect("forget the latest");
    let o = serve_refused(&["--store", url, "--history-store", url]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains(&format!(
            "the engine store is at schema version {}, and this eflow needs version {latest}",
            latest - 1
        )) && err.contains("run `eflow migrate`"),
        "{}",
        text(&o)
    );
    // Put back as it was (its tables are there), then one from the future.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES ($1, $2, true, $3, 0)",
    )
    .bind(latest)
    .bind(&row.0)
    .bind(&row.1)
    .execute(&mut conn)
    .await
    .expect("restore");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from a newer eflow', true, '\\x00', 0)",
    )
    .execute(&mut conn)
    .await
    .expect("a newer migration");
    let o = serve_refused(&["--store", url, "--history-store", url]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the engine store is at schema version 999, newer than this eflow knows")
            && err.contains(&format!("it needs version {latest}")),
        "{}",
        text(&o)
    );
    // `eflow migrate` refuses it too, and changes nothing.
    let o = eflow_cmd(&["migrate", "--store", url, "--history-store", url]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("newer than this eflow knows"),
        "{}",
        text(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_come_from_a_config_file_below_the_command_line() {
    let dir = common::temp_dir("ops-config");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.join("eflow.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata = \"{}\"\nadmin_token = \"{ADMIN}\"\nshards = 3\nrole = [\"api\", \"engine\"]\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--shards",
            "2",
        ])
        .env("EFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start eflow serve");
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let cluster = poll_until("the server to answer", Duration::from_secs(60), || async {
        let r = api
            .http
            .get(format!("{}/v1/cluster", api.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        let c = r.json::<serde_json::Value>().await.ok()?;
        // Its first heartbeat may come just after it answers.
        (c["members"].as_array()?.len() == 1).then_some(c)
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    // The command line's --shards 2 over the file's 3; the file's roles and data.
    assert_eq!(
        cluster["shards"].as_array().map(Vec::len),
        Some(2),
        "{cluster}"
    );
    assert_eq!(
        cluster["members"][0]["roles"],
        json!(["api", "engine"]),
        "{cluster}"
    );
    assert!(dir.join("data").join("eflow.db").exists());

    // A key that is no option is named, with what the keys are.
    std::fs::write(&config, "sotre = \"postgres://x\"\n").unwrap();
    let o = eflow_cmd(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("`sotre` is not an option of `eflow serve`"),
        "{err}"
    );
    assert!(err.contains("history-store"), "{err}");
    // A bad value is clap's own error, as if typed.
    std::fs::write(&config, "role = \"api,cook\"\n").unwrap();
    let o = eflow_cmd(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("unknown role `cook`"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_process_without_the_engine_needs_a_shared_bus() {
    let o = serve_refused(&["--role", "api,scheduler"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("needs a shared bus") && err.contains("--bus nats://"),
        "{}",
        text(&o)
    );
}

#[test]
fn migrate_makes_the_embedded_files() {
    let dir = common::temp_dir("ops-migrate-sqlite");
    let o = eflow_cmd(&["migrate", "--data", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.join("eflow.db").exists() && dir.join("history.db").exists());
    let o = eflow_cmd(&["migrate", "--data", dir.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout)
            .matches("nothing to do")
            .count(),
        2,
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// One process at a time runs a singleton (the history's consumer): the
/// other stands by and takes over once the first stops, and no two run at
/// once meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_among_many_hands_over_when_the_active_stops() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use eflow_runtime::clock::SystemClock;
    use eflow_runtime::cluster::{HISTORY_LEASE, one_active};
    use eflow_runtime::store::{Durability, Store};
    use tokio_util::sync::CancellationToken;

    let dir = common::temp_dir("one-active");
    let url = format!("sqlite://{}", dir.join("eflow.db").display());
    let store = Store::open(&url, Durability::Normal).await.unwrap();
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let ran: Arc<std::sync::Mutex<Vec<&'static str>>> = Arc::default();
    let start = |me: &'static str, stop: CancellationToken| {
        let (running, most, ran) = (running.clone(), most.clone(), ran.clone());
        tokio::spawn(one_active(
            HISTORY_LEASE,
            store.clone(),
            Arc::new(SystemClock),
            me.to_string(),
            false,
            stop,
            move |stop: CancellationToken| {
                let (running, most, ran) = (running.clone(), most.clone(), ran.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    ran.lock().unwrap().push(me);
                    stop.cancelled().await;
                    running.fetch_sub(1, Ordering::SeqCst);
                }
            },
        ))
    };
    let (stop_a, stop_b) = (CancellationToken::new(), CancellationToken::new());
    let a = start("a", stop_a.clone());
    poll_until("a to be active", Duration::from_secs(10), || async {
        (!ran.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let b = start("b", stop_b.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        *ran.lock().unwrap(),
        ["a"],
        "b stands by while a holds the lease"
    );
    stop_a.cancel();
    a.await.unwrap();
    poll_until("b to take over", Duration::from_secs(10), || async {
        (ran.lock().unwrap().len() == 2).then_some(())
    })
    .await;
    assert_eq!(*ran.lock().unwrap(), ["a", "b"]);
    assert_eq!(most.load(Ordering::SeqCst), 1, "never two at once");
    stop_b.cancel();
    b.await.unwrap();
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// `deploy/systemd/eflow@.service` is a unit systemd accepts, running this
/// binary (`systemd-analyze verify`, with its path put in).
#[test]
fn the_systemd_unit_verifies() {
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("skipped: systemd-analyze is not installed (Debian's systemd package has it)");
        return;
    };
    assert!(probe.status.success());
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/eflow@.service"
    ))
    .expect("the unit file");
    assert!(unit.contains("ExecStart=/usr/local/bin/eflow serve --config /etc/eflow/%i.toml"));
    let dir = common::temp_dir("systemd");
    let path = dir.join("eflow@engine.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/eflow", env!("CARGO_BIN_EXE_eflow")),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze verify");
    assert!(o.status.success(), "{}", text(&o));
    let _ = std::fs::remove_dir_all(dir);
}

/// `deploy/eflow.toml`, the example config, is options `eflow serve` takes.
#[test]
fn the_example_config_parses_as_eflow_serves_options() {
    use clap::Parser;
    use eflow_runtime::cli::{Cli, Command as Cmd};
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/eflow.toml");
    let args = eflow_runtime::cli::config::expand(
        ["eflow", "serve", "--config", path]
            .iter()
            .map(std::ffi::OsString::from)
            .collect(),
    )
    .expect("the example's keys are options");
    let cli = Cli::try_parse_from(args).expect("the example's values parse");
    let Cmd::Serve(serve) = cli.command else {
        panic!("serve")
    };
    assert_eq!(serve.shards, 64);
    assert_eq!(serve.role.names(), "engine,scheduler,history");
    assert_eq!(serve.bus, "nats://nats.internal:4222");
    assert_eq!(
        serve.stores.store.as_deref(),
        Some("postgres://eflow@db.internal/eflow")
    );
}
