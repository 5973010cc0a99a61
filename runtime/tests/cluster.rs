//! Several `eflow serve` processes as one cluster, against the real binary:
//! one PostgreSQL schema holds the state, one NATS JetStream prefix is the
//! bus. The engines share the shards; a `kill -9` moves the dead one's
//! shards to the survivor once its leases lapse; a new engine takes its
//! share back; and every run finishes once, its log without gaps or
//! repeats. Skipped with a reason when PostgreSQL or NATS is unreachable
//! outside CI; failed in CI.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::binary::{Eflow, eflow_with_env};
use common::{ADMIN, Api, poll_until};
use serde_json::{Value, json};

const FLOW: &str = r#"
record Model { auc: Float }

remote step Train(customer: String) -> Model
remote step Evaluate(customer: String) -> Model

flow Retrain(customer: String) -> Model {
    let m = Train(customer: customer)
    let e = Evaluate(customer: customer)
    return e
}

bindings dev {
    Train = sim { duration: 1s, failure_rate: 0.0, seed: 1 }
    Evaluate = sim { duration: 300ms, failure_rate: 0.0, seed: 2 }
}
"#;

const SHARDS: usize = 8;

async fn member(name: &str, store: &str, bus: &str) -> Eflow {
    member_as(name, store, bus, "api,engine,scheduler,history").await
}

/// A member with only `roles`.
async fn member_as(name: &str, store: &str, bus: &str, roles: &str) -> Eflow {
    member_in(name, store, bus, roles, &[]).await
}

/// A member with only `roles` and more variables in its environment.
async fn member_in(name: &str, store: &str, bus: &str, roles: &str, env: &[(&str, &str)]) -> Eflow {
    let shards = SHARDS.to_string();
    eflow_with_env(
        name,
        &[
            "--store",
            store,
            "--history-store",
            store,
            "--bus",
            bus,
            "--shards",
            &shards,
            "--role",
            roles,
        ],
        env,
    )
    .await
}

/// Shards held per owner, as `GET /v1/cluster` shows them.
async fn holders(api: &Api) -> BTreeMap<String, usize> {
    let c = api.get(Some(ADMIN), "/v1/cluster").await.ok("cluster");
    let mut by = BTreeMap::new();
    for s in c["shards"].as_array().expect("shards") {
        if s["held"] == true {
            *by.entry(s["owner"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    by
}

async fn wait_for_shares(api: &Api, what: &str, want: &[usize]) -> BTreeMap<String, usize> {
    poll_until(what, Duration::from_secs(60), || async {
        let h = holders(api).await;
        let mut got: Vec<usize> = h.values().copied().collect();
        got.sort_unstable();
        (got == want).then_some(h)
    })
    .await
}

async fn start_runs(api: &Api, token: &str, from: usize, to: usize) {
    for i in from..to {
        let r = api
            .post(
                Some(token),
                "/v1/runs",
                &json!({"flow": "Retrain", "id": format!("c-{i}"), "input": {"customer": format!("c-{i}")}}),
            )
            .await;
        assert!(r.status < 300, "start c-{i}: {r:?}");
    }
}

/// Every run succeeded, and its log is `started`, one completion per step
/// and the run's end, numbered 0.. without a gap or a repeat.
async fn check_runs(api: &Api, token: &str, n: usize) {
    for i in 0..n {
        let id = format!("c-{i}");
        let run = api.wait_finished(token, &id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        let events = api
            .get(Some(token), &format!("/v1/runs/{id}/events"))
            .await
            .ok("events");
        let events = events.as_array().expect("events");
        let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "{id}: {events:?}"
        );
        let mut done: Vec<&str> = events
            .iter()
            .filter(|e| e["event"]["type"] == "step_completed")
            .map(|e| e["event"]["node"].as_str().unwrap())
            .collect();
        // The two steps are independent: they run at once.
        done.sort_unstable();
        assert_eq!(done, ["e", "m"], "{id}: each step completed once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_share_shards_and_take_over_a_killed_ones() {
    let Some(schema) = common::postgres::Schema::create("cluster").await else {
        return;
    };
    let Some(prefix) = common::nats::Prefix::create("cluster").await else {
        return;
    };
    let (store, bus) = (schema.url.as_str(), prefix.url.as_str());
    let a = member("cluster-a", store, bus).await;
    let b = member("cluster-b", store, bus).await;
    let api_a = Api::new(format!("http://{}", a.addr));
    let api_b = Api::new(format!("http://{}", b.addr));
    wait_for_shares(&api_a, "two engines to hold four shards each", &[4, 4]).await;

    // Work through both APIs: each input goes to its shard's owner.
    let token = api_a.create_tenant("acme", json!({})).await;
    api_b
        .deploy_source(&token, &[("retrain.eflow", FLOW)])
        .await;
    start_runs(&api_a, &token, 0, 40).await;
    start_runs(&api_b, &token, 40, 80).await;

    // kill -9 one engine with runs in flight: the survivor takes its shards
    // once its leases and its member row lapse.
    let killed = Instant::now();
    drop(b);
    let h = wait_for_shares(&api_a, "the survivor to hold every shard", &[SHARDS]).await;
    eprintln!(
        "every shard held by the survivor {:.1} s after the kill ({h:?})",
        killed.elapsed().as_secs_f64()
    );
    start_runs(&api_a, &token, 80, 100).await;
    check_runs(&api_a, &token, 100).await;

    // A new engine joins: the shards are shared again, and work goes on.
    let c = member("cluster-c", store, bus).await;
    let api_c = Api::new(format!("http://{}", c.addr));
    wait_for_shares(&api_c, "the newcomer to take its share", &[4, 4]).await;
    start_runs(&api_c, &token, 100, 140).await;
    check_runs(&api_c, &token, 140).await;

    // Nothing was refused by fencing in the survivor (it never lost a
    // shard), and the history holds every run once.
    let metrics = reqwest::get(format!("http://{}/metrics", a.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("\neflow_fenced_commits_total 0\n"),
        "{metrics}"
    );
    api_a.history_caught_up().await;
    let listed = api_a.all_runs(&token, "flow=Retrain").await;
    let mut ids: Vec<&str> = listed.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 140, "every run once in the history");
    // A process that would route runs to other shards is refused.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "4"])
        .args(["--store", store, "--history-store", store, "--bus", bus])
        .arg("--data")
        .arg(common::temp_dir("cluster-refused"))
        .env("EFLOW_LOG", "warn")
        .output()
        .expect("run eflow serve");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("first served with --shards 8"),
        "{err}"
    );
    let cluster: Value = api_c.get(Some(ADMIN), "/v1/cluster").await.ok("cluster");
    assert!(
        cluster["consumers"][0]["owner"].is_string(),
        "one history consumer is active: {cluster}"
    );
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// An engine paused past its lease (SIGSTOP) loses its shards to the other;
/// resumed (SIGCONT), it cannot write with its old leases (the commit would
/// be fenced), notices it lost them, and takes its share back; every run
/// finishes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_paused_past_its_lease_is_fenced_out_and_rejoins() {
    let Some(schema) = common::postgres::Schema::create("cluster_stop").await else {
        return;
    };
    let Some(prefix) = common::nats::Prefix::create("cluster_stop").await else {
        return;
    };
    let (store, bus) = (schema.url.as_str(), prefix.url.as_str());
    let a = member("cluster-stop-a", store, bus).await;
    let b = member("cluster-stop-b", store, bus).await;
    let api_a = Api::new(format!("http://{}", a.addr));
    wait_for_shares(&api_a, "two engines to hold four shards each", &[4, 4]).await;
    let token = api_a.create_tenant("acme", json!({})).await;
    api_a
        .deploy_source(&token, &[("retrain.eflow", FLOW)])
        .await;
    start_runs(&api_a, &token, 0, 60).await;

    signal(b.child.id(), "STOP");
    wait_for_shares(&api_a, "the other engine to take every shard", &[SHARDS]).await;
    start_runs(&api_a, &token, 60, 80).await;
    signal(b.child.id(), "CONT");
    wait_for_shares(
        &api_a,
        "the resumed engine to take its share again",
        &[4, 4],
    )
    .await;
    check_runs(&api_a, &token, 80).await;

    let metrics = reqwest::get(format!("http://{}/metrics", b.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} in:\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert!(
        value("eflow_shards_released_total") >= 4,
        "the paused engine lost its four shards: {metrics}"
    );
    eprintln!(
        "the resumed engine: {} commits fenced, {} shards lost or given up, {} taken",
        value("eflow_fenced_commits_total"),
        value("eflow_shards_released_total"),
        value("eflow_shards_taken_total")
    );
    drop(b);
}

const QUICK: &str = r#"
remote step Ping(n: Int) -> Int

flow Quick(n: Int) -> Int {
    let a = Ping(n: n)
    return a
}

bindings dev {
    Ping = sim { duration: 10ms, failure_rate: 0.0, seed: 1 }
}
"#;

/// A run started through one process's API and ended by another process's
/// engine gives its place back in both: a tenant limited to 2 runs in
/// progress starts run after run through an API-only process, every one of
/// which ends on the other process's engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_quota_follows_runs_that_end_in_another_process() {
    let Some(schema) = common::postgres::Schema::create("quota").await else {
        return;
    };
    let Some(prefix) = common::nats::Prefix::create("quota").await else {
        return;
    };
    let (store, bus) = (schema.url.as_str(), prefix.url.as_str());
    let _engine = member_as("quota-engine", store, bus, "engine,scheduler,history").await;
    let front = member_as("quota-api", store, bus, "api").await;
    let api = Api::new(format!("http://{}", front.addr));
    let token = api
        .create_tenant("acme", json!({ "max_active_runs": 2 }))
        .await;
    api.deploy_source(&token, &[("quick.eflow", QUICK)]).await;
    for i in 0..8 {
        let id = format!("q-{i}");
        let r = api
            .post(
                Some(&token),
                "/v1/runs",
                &json!({ "flow": "Quick", "id": id, "input": { "n": i } }),
            )
            .await;
        assert!(r.status < 300, "start {id} (2 may be in progress): {r:?}");
        let run = api.wait_finished(&token, &id).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    // The API's count of the tenant's runs in progress is back to none.
    poll_until(
        "the API process to count no run in progress",
        Duration::from_secs(10),
        || async {
            let tenants = api.get(Some(ADMIN), "/v1/tenants").await.ok("tenants");
            let acme = tenants
                .as_array()
                .and_then(|ts| ts.iter().find(|t| t["id"] == "acme").cloned())?;
            (acme["active_runs"] == 0).then_some(())
        },
    )
    .await;
}

/// A tenant purged through one process and created again through the
/// other: every engine applies its new runs. (The purge marked its tenant
/// stopped in every shard worker's process, the creation must unmark it in
/// each; before, the purging process kept the mark and its shards refused
/// the new tenant's starts as "tenant does not exist".)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_purged_through_one_process_and_created_again_through_the_other_runs() {
    let Some(schema) = common::postgres::Schema::create("cluster_purge").await else {
        return;
    };
    let Some(prefix) = common::nats::Prefix::create("cluster_purge").await else {
        return;
    };
    let (store, bus) = (schema.url.as_str(), prefix.url.as_str());
    let a = member("cluster-purge-a", store, bus).await;
    let b = member("cluster-purge-b", store, bus).await;
    let api_a = Api::new(format!("http://{}", a.addr));
    let api_b = Api::new(format!("http://{}", b.addr));
    wait_for_shares(&api_a, "two engines to hold four shards each", &[4, 4]).await;

    let token = api_a.create_tenant("acme", json!({})).await;
    api_a
        .deploy_source(&token, &[("retrain.eflow", FLOW)])
        .await;
    start_runs(&api_a, &token, 0, 10).await;
    let purged = api_b.delete(Some(ADMIN), "/v1/tenants/acme").await;
    assert!(purged.status < 300, "purge: {purged:?}");

    // Created again through the other process: runs on every shard, so on
    // both engines, start and finish.
    let token = api_a.create_tenant("acme", json!({})).await;
    api_b
        .deploy_source(&token, &[("retrain.eflow", FLOW)])
        .await;
    start_runs(&api_b, &token, 0, 20).await;
    start_runs(&api_a, &token, 20, 40).await;
    check_runs(&api_a, &token, 40).await;
}

/// A purge another live process holds is its own: a process that starts
/// meanwhile leaves it alone (before, one with the API role finished it at
/// its start, and could do so after the holder had ended it and the tenant
/// had been created again, deleting the new tenant). Once the holder
/// stops (its hold runs out), a process with the API role takes the purge
/// over and finishes it, and the tenant can be created again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_is_taken_over_only_from_a_holder_that_stopped() {
    let Some(schema) = common::postgres::Schema::create("cluster_purge_hold").await else {
        return;
    };
    let Some(prefix) = common::nats::Prefix::create("cluster_purge_hold").await else {
        return;
    };
    let (store, bus) = (schema.url.as_str(), prefix.url.as_str());
    let a = member("cluster-purge-hold-a", store, bus).await;
    let api_a = Api::new(format!("http://{}", a.addr));
    let token = api_a.create_tenant("acme", json!({})).await;
    api_a
        .deploy_source(&token, &[("retrain.eflow", FLOW)])
        .await;
    start_runs(&api_a, &token, 0, 4).await;
    check_runs(&api_a, &token, 4).await;

    // Another process (not started here) holds acme's purge for minutes.
    let db = sqlx::PgPool::connect(store).await.expect("connect");
    sqlx::query(
        "INSERT INTO purges (tenant, started_at, owner, lease_until) \
         VALUES ('acme', 0, 'elsewhere', (extract(epoch FROM clock_timestamp()) * 1000)::bigint + 600000)",
    )
    .execute(&db)
    .await
    .expect("hold the purge");
    let b = member("cluster-purge-hold-b", store, bus).await;
    let api_b = Api::new(format!("http://{}", b.addr));
    // Past b's start and a round of both processes' checks for abandoned purges.
    tokio::time::sleep(Duration::from_secs(17)).await;
    let tenants = api_b.get(Some(ADMIN), "/v1/tenants").await;
    assert!(
        tenants.text.contains("\"acme\""),
        "a live holder's purge was carried out by another process: {}",
        tenants.text
    );
    let again = api_b.delete(Some(ADMIN), "/v1/tenants/acme").await;
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(
        again.body["error"]["code"], "purge_in_progress",
        "{again:?}"
    );
    assert!(
        again.text.contains("elsewhere"),
        "names the holder: {again:?}"
    );
    let create = api_b
        .post(Some(ADMIN), "/v1/tenants", &json!({"id": "acme"}))
        .await;
    assert_eq!(create.status, 409, "{create:?}");

    // The holder stops: its hold runs out, and the purge is finished.
    sqlx::query("UPDATE purges SET lease_until = 0 WHERE tenant = 'acme'")
        .execute(&db)
        .await
        .expect("end the hold");
    poll_until("the abandoned purge to be finished", Duration::from_secs(60), || async {
        let left: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM purges) + (SELECT count(*) FROM tenants WHERE id = 'acme') \
             + (SELECT count(*) FROM runs)",
        )
        .fetch_one(&db)
        .await
        .expect("count");
        (left == 0).then_some(())
    })
    .await;
    let token = api_a.create_tenant("acme", json!({})).await;
    let r = api_b.get(Some(&token), "/v1/runs/c-0").await;
    assert_eq!(r.status, 404, "the purged run: {r:?}");
}

/// A start that reaches a worker after its tenant's purge creates nothing,
/// even in a process that was not told of the purge: one paused (SIGSTOP)
/// while the other took its shards and served the purge, then resumed with
/// the tenant's bundle still cached, takes its shards back; the starts sent
/// then (as a scheduler in a paused process would send the one it claimed
/// before the purge) are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_comes_after_its_tenants_purge_creates_nothing() {
    use sqlx::Connection;
    let Some(schema) = common::postgres::Schema::create("cluster_late").await else {
        return;
    };
    let Some(prefix) = common::nats::Prefix::create("cluster_late").await else {
        return;
    };
    let (store, bus) = (schema.url.as_str(), prefix.url.as_str());
    let a = member("cluster-late-a", store, bus).await;
    let b = member("cluster-late-b", store, bus).await;
    let api_a = Api::new(format!("http://{}", a.addr));
    wait_for_shares(&api_a, "two engines to hold four shards each", &[4, 4]).await;
    let token = api_a.create_tenant("acme", json!({})).await;
    api_a
        .deploy_source(&token, &[("retrain.eflow", FLOW)])
        .await;
    // Runs on every shard: both processes cache the bundle.
    start_runs(&api_a, &token, 0, 40).await;
    check_runs(&api_a, &token, 40).await;
    let mut db = sqlx::PgConnection::connect(store).await.expect("connect");
    let bundle: String = sqlx::query_scalar("SELECT bundle FROM runs LIMIT 1")
        .fetch_one(&mut db)
        .await
        .expect("a run's bundle");

    signal(b.child.id(), "STOP");
    wait_for_shares(&api_a, "the other engine to take every shard", &[SHARDS]).await;
    let purged = api_a.delete(Some(ADMIN), "/v1/tenants/acme").await;
    assert!(purged.status < 300, "purge: {purged:?}");
    signal(b.child.id(), "CONT");
    wait_for_shares(
        &api_a,
        "the resumed engine to take its share again",
        &[4, 4],
    )
    .await;

    // One late start per shard, straight onto the bus.
    let js = prefix.jetstream().await;
    let mut covered = [false; SHARDS];
    let mut i = 0;
    while covered.contains(&false) {
        let id = format!("acme:late-{i}");
        i += 1;
        let shard = eflow_runtime::store::shard_of(&id, SHARDS as u32) as usize;
        if covered[shard] {
            continue;
        }
        covered[shard] = true;
        let create = json!({ "create": {
            "meta": { "id": id, "tenant": "acme", "bundle": bundle, "created_at": 1 },
            "fresh": true,
            "flow": "Retrain",
            "input": { "customer": "late" },
        }});
        js.publish(
            format!("{}.in.{shard}", prefix.name),
            create.to_string().into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    }
    // Taken and applied (or refused) by each shard's worker.
    poll_until(
        "the late starts to be taken",
        Duration::from_secs(30),
        || {
            let js = js.clone();
            let stream = format!("{}_in", prefix.name);
            async move {
                let mut s = js.get_stream(stream).await.ok()?;
                (s.info().await.ok()?.state.messages == 0).then_some(())
            }
        },
    )
    .await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE tenant = 'acme'")
        .fetch_one(&mut db)
        .await
        .expect("count");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE run LIKE 'acme:%'")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(
        (left, events),
        (0, 0),
        "runs and events of the purged tenant made by late starts"
    );
    let _ = db.close().await;
    drop(b);
}

/// Debian's libfaketime (`apt-get install faketime`), to shift one
/// process's clock; `None` (the test skipped with the reason) without it,
/// outside CI.
fn faketime() -> Option<String> {
    let lib = format!(
        "/usr/lib/{}-linux-gnu/faketime/libfaketimeMT.so.1",
        std::env::consts::ARCH
    );
    if std::path::Path::new(&lib).exists() {
        return Some(lib);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{lib} is missing and CI is set: apt-get install faketime"
    );
    eprintln!("skipped: {lib} is missing (apt-get install faketime); set CI=1 to fail instead");
    None
}

/// Two engines whose machines' clocks are a minute apart (libfaketime: one
/// 30 s ahead, one 30 s behind) share the shards, and the one behind takes
/// the other's once it is killed, within the lease: both read the time by
/// PostgreSQL's clock. Before, each judged the other's leases and member
/// row by its own clock: the one ahead found the other's expired and held
/// every shard for good, and the one behind would have waited a minute for
/// a dead one's leases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_whose_clocks_are_a_minute_apart_share_the_shards() {
    let Some(lib) = faketime() else {
        return;
    };
    let Some(schema) = common::postgres::Schema::create("cluster_skew").await else {
        return;
    };
    let Some(prefix) = common::nats::Prefix::create("cluster_skew").await else {
        return;
    };
    let (store, bus) = (schema.url.as_str(), prefix.url.as_str());
    let all = "api,engine,scheduler,history";
    let env = |by: &'static str| {
        vec![
            ("LD_PRELOAD", lib.as_str()),
            ("FAKETIME", by),
            // Only the time of day is off, as between two machines.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
    };
    let a = member_in("skew-a", store, bus, all, &env("+30s")).await;
    let b = member_in("skew-b", store, bus, all, &env("-30s")).await;
    let api_b = Api::new(format!("http://{}", b.addr));
    wait_for_shares(
        &api_b,
        "two engines a minute apart to hold four shards each",
        &[4, 4],
    )
    .await;
    let token = api_b.create_tenant("acme", json!({})).await;
    api_b
        .deploy_source(&token, &[("retrain.eflow", FLOW)])
        .await;
    start_runs(&api_b, &token, 0, 20).await;
    check_runs(&api_b, &token, 20).await;

    // The one ahead killed: the one behind takes its shards once its
    // leases lapse by the store's clock, not a minute later by its own.
    let killed = Instant::now();
    drop(a);
    wait_for_shares(&api_b, "the one behind to hold every shard", &[SHARDS]).await;
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "the shards moved {:.1} s after the kill: a lease is 5 s",
        killed.elapsed().as_secs_f64()
    );
    start_runs(&api_b, &token, 20, 30).await;
    check_runs(&api_b, &token, 30).await;
}
