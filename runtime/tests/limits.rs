//! A tenant cannot exhaust the server: subflow children count against the
//! tenant's active runs (a child start past the limit waits for a place,
//! across a restart, and is dropped when its parent no longer needs it), and
//! the deployed-bundle cache is bounded by bytes (against the real binary).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use common::binary::{eflow, proc_mb};
use common::*;
use eflow_runtime::clock::{Clock, ManualClock, SystemClock};
use eflow_runtime::server::{Options, Server};
use eflow_runtime::store::{Durability, Store};
use serde_json::{Value, json};

/// A fan-out of subflow children, each one simulated step of `duration`.
fn fan_source(duration: &str) -> String {
    format!(
        "remote step Work(n: Int) -> Int

flow Child(n: Int) -> Int {{
    let a = Work(n: n)
    return a
}}

flow Fan(xs: List<Int>) -> List<Int> {{
    let rs = for x in xs join all {{
        Child(n: x)
    }}
        parallel 50
    return rs
}}

// The same, after a first step: runs started together all hold their
// places before any of them starts a child.
flow Later(xs: List<Int>) -> List<Int> {{
    let _first = Work(n: 0)
    let rs = for x in xs join all {{
        Child(n: x)
    }}
        after _first
        parallel 50
    return rs
}}

bindings test {{
    Work = sim {{ duration: {duration} }}
}}
"
    )
}

fn id_of(run: &Value) -> String {
    run["id"].as_str().expect("a run id").to_string()
}

/// The id of the fan-out's `i`th child (first attempt).
fn child(parent: &str, i: usize) -> String {
    format!("{parent}.rs.{i}.1")
}

/// What the tenant's own token reads of it: its runs in progress, as the quota counts them.
async fn tenant_active(api: &Api, token: &str) -> i64 {
    let list = api.get(Some(token), "/v1/tenants").await.ok("tenants");
    list[0]["active_runs"]
        .as_i64()
        .unwrap_or_else(|| panic!("no active_runs in {list}"))
}

/// The status of each child of `parent` (`None`: not created), read from the engine.
async fn children(api: &Api, token: &str, parent: &str, n: usize) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for i in 0..n {
        let r = api
            .get(Some(token), &format!("/v1/runs/{}", child(parent, i)))
            .await;
        out.push(match r.status {
            404 => None,
            200 => Some(r.body["status"].as_str().unwrap_or_default().to_string()),
            s => panic!("reading child {i}: {s} {}", r.text),
        });
    }
    out
}

fn in_progress(children: &[Option<String>]) -> usize {
    children
        .iter()
        .filter(|s| matches!(s.as_deref(), Some("created" | "running")))
        .count()
}

/// When a run was in progress: from its first event to its last (ms).
async fn lifetime(api: &Api, token: &str, id: &str) -> (i64, i64) {
    let events = api
        .get(Some(token), &format!("/v1/runs/{id}/events"))
        .await
        .ok("events");
    let events = events.as_array().expect("a list of events");
    let (first, last) = (events.first(), events.last());
    (
        ms(&first.expect("a first event")["at"]),
        ms(&last.expect("a last event")["at"]),
    )
}

/// The most runs in progress at one time among these lifetimes (a run that
/// starts when another ends does not overlap it).
fn most_at_once(lifetimes: &[(i64, i64)]) -> usize {
    let mut edges: Vec<(i64, i32)> = lifetimes
        .iter()
        .flat_map(|&(start, end)| [(start, 1), (end, -1)])
        .collect();
    // Ends before starts at the same millisecond.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_never_passes_the_tenants_active_runs() {
    const LIMIT: i64 = 5;
    const N: usize = 50;
    let s = TestServer::start("limits-fanout").await;
    let api = &s.api;
    let token = api
        .create_tenant("small", json!({"max_active_runs": LIMIT}))
        .await;
    api.deploy_source(&token, &[("fan.eflow", &fan_source("200ms"))])
        .await;
    let xs: Vec<usize> = (0..N).collect();
    let parent = id_of(&api.start(&token, "Fan", json!({"xs": xs})).await);

    // Until the parent ends, sample the runs in progress as the quota counts
    // them, and try a top-level start whenever the tenant is at its limit.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (api, token) = (Api::new(s.addr()), token.clone());
        let done = done.clone();
        tokio::spawn(async move {
            let (mut most_counted, mut refused) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                let active = tenant_active(&api, &token).await;
                most_counted = most_counted.max(active);
                if active < LIMIT {
                    continue;
                }
                let r = api
                    .post(
                        Some(&token),
                        "/v1/runs",
                        &json!({"flow": "Child", "input": {"n": 1}}),
                    )
                    .await;
                match r.status {
                    429 => {
                        assert_eq!(r.error_code("a start at the limit"), "quota_active_runs");
                        refused += 1;
                    }
                    // A child ended between the two requests: the place was free.
                    200 => {
                        api.wait_finished(&token, &id_of(&r.body)).await;
                    }
                    s => panic!("a start at the limit: {s} {}", r.text),
                }
            }
            (most_counted, refused)
        })
    };
    let end = api.wait_finished(&token, &parent).await;
    done.store(true, Ordering::Relaxed);
    let (most_counted, refused) = sampler.await.expect("the sampler");
    assert_eq!(end["status"], "succeeded", "{end}");
    let result = end["result"]
        .as_array()
        .unwrap_or_else(|| panic!("no result list in {end}"));
    assert_eq!(result.len(), N, "the join holds every child's result");

    // From the engine's own record: when each child was in progress.
    let mut lifetimes = Vec::new();
    for i in 0..N {
        let c = api.run(&token, &child(&parent, i)).await;
        assert_eq!(c["status"], "succeeded", "{c}");
        lifetimes.push(lifetime(api, &token, &child(&parent, i)).await);
    }
    let most = most_at_once(&lifetimes);
    assert!(
        most < LIMIT as usize,
        "{most} children ran at once beside their parent; the tenant may have {LIMIT} runs"
    );
    assert!(
        most_counted <= LIMIT,
        "the quota counted {most_counted} runs in progress; the tenant may have {LIMIT}"
    );
    assert!(
        refused > 0,
        "a top-level start was never refused while children held the places"
    );
    poll_until("the places to be given back", DEADLINE, || async {
        (tenant_active(api, &token).await == 0).then_some(())
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_that_hold_every_place_still_finish() {
    const LIMIT: i64 = 2;
    const N: usize = 3;
    let s = TestServer::start("limits-parents").await;
    let api = &s.api;
    let token = api
        .create_tenant("small", json!({"max_active_runs": LIMIT}))
        .await;
    api.deploy_source(&token, &[("fan.eflow", &fan_source("500ms"))])
        .await;
    let xs: Vec<usize> = (0..N).collect();
    // Two parents take both places before any child starts; each may still
    // run one child at a time, so neither waits for the other forever.
    let parents = [
        id_of(&api.start(&token, "Later", json!({"xs": xs})).await),
        id_of(&api.start(&token, "Later", json!({"xs": xs})).await),
    ];
    for parent in &parents {
        let end = api.wait_finished(&token, parent).await;
        assert_eq!(end["status"], "succeeded", "{end}");
        assert_eq!(end["result"].as_array().map(Vec::len), Some(N), "{end}");
        let mut lifetimes = Vec::new();
        for i in 0..N {
            lifetimes.push(lifetime(api, &token, &child(parent, i)).await);
        }
        assert_eq!(
            most_at_once(&lifetimes),
            1,
            "one child at a time past the limit"
        );
    }
    poll_until("the places to be given back", DEADLINE, || async {
        (tenant_active(api, &token).await == 0).then_some(())
    })
    .await;
    s.stop().await;
}

/// A server on `dir` (kept between starts) with the manual `clock`.
async fn server_on(dir: &Path, clock: &ManualClock) -> (Server, Api) {
    let mut o = Options::new(dir.to_path_buf(), "127.0.0.1:0".parse().expect("addr"));
    o.admin_token = Some(ADMIN.to_string());
    o.shards = 3;
    o.clock = Arc::new(clock.clone());
    let server = Server::start(o).await.expect("the server starts");
    let api = Api::new(format!("http://{}", server.addr));
    (server, api)
}

/// The outbox rows left in a stopped server's store.
async fn outbox_left(dir: &Path) -> usize {
    let store = Store::open(
        &format!("sqlite://{}", dir.join("eflow.db").display()),
        Durability::Normal,
    )
    .await
    .expect("open the store");
    let n = store.outbox().await.expect("the outbox").len();
    store.close().await;
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_child_starts_survive_a_restart_and_start_as_places_free() {
    const LIMIT: i64 = 3;
    const N: usize = 6;
    let dir = temp_dir("limits-restart");
    let clock = ManualClock::new(SystemClock.now_ms() / 1000 * 1000);
    let (server, api) = server_on(&dir, &clock).await;
    let token = api
        .create_tenant("small", json!({"max_active_runs": LIMIT}))
        .await;
    api.deploy_source(&token, &[("fan.eflow", &fan_source("1h"))])
        .await;
    let xs: Vec<usize> = (0..N).collect();
    let parent = id_of(&api.start(&token, "Fan", json!({"xs": xs})).await);
    // The parent and two children hold the three places; four starts wait.
    poll_until("two children", DEADLINE, || async {
        (in_progress(&children(&api, &token, &parent, N).await) == 2).then_some(())
    })
    .await;
    assert_eq!(tenant_active(&api, &token).await, LIMIT);
    server.stop().await;
    assert_eq!(
        outbox_left(&dir).await,
        4,
        "the waiting starts keep their rows"
    );

    // After a restart the places are counted from the store and the starts
    // read again from the outbox still wait.
    let (server, api) = server_on(&dir, &clock).await;
    assert_eq!(tenant_active(&api, &token).await, LIMIT);
    let now = children(&api, &token, &parent, N).await;
    assert_eq!(in_progress(&now), 2, "{now:?}");
    assert!(now[2..].iter().all(Option::is_none), "{now:?}");

    // Each hour the children in progress end and the waiting ones take their places.
    let end = poll_until("the fan-out to end", DEADLINE, || async {
        let now = children(&api, &token, &parent, N).await;
        assert!(in_progress(&now) < LIMIT as usize, "{now:?}");
        assert!(tenant_active(&api, &token).await <= LIMIT);
        let run = api.run(&token, &parent).await;
        if run["status"] != "running" {
            return Some(run);
        }
        clock.advance(3_600_000);
        None
    })
    .await;
    assert_eq!(end["status"], "succeeded", "{end}");
    assert_eq!(end["result"].as_array().map(Vec::len), Some(N), "{end}");
    poll_until("the places to be given back", DEADLINE, || async {
        (tenant_active(&api, &token).await == 0).then_some(())
    })
    .await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_or_purged_parent_leaves_no_waiting_start_behind() {
    const LIMIT: i64 = 3;
    const N: usize = 6;
    let dir = temp_dir("limits-cancel");
    let clock = ManualClock::new(SystemClock.now_ms() / 1000 * 1000);
    let (server, api) = server_on(&dir, &clock).await;
    let xs: Vec<usize> = (0..N).collect();
    let mut parents = Vec::new();
    for tenant in ["cancelled", "purged"] {
        let token = api
            .create_tenant(tenant, json!({"max_active_runs": LIMIT}))
            .await;
        api.deploy_source(&token, &[("fan.eflow", &fan_source("1h"))])
            .await;
        let parent = id_of(&api.start(&token, "Fan", json!({"xs": xs})).await);
        poll_until("two children", DEADLINE, || async {
            (in_progress(&children(&api, &token, &parent, N).await) == 2).then_some(())
        })
        .await;
        parents.push((token, parent));
    }

    // Cancelling the parent cancels its children and drops the starts waiting.
    let (token, parent) = &parents[0];
    api.post(
        Some(token),
        &format!("/v1/runs/{parent}/cancel"),
        &json!({}),
    )
    .await
    .ok("cancel");
    api.wait_finished(token, parent).await;
    poll_until("the places to be given back", DEADLINE, || async {
        (tenant_active(&api, token).await == 0).then_some(())
    })
    .await;
    let now = children(&api, token, parent, N).await;
    assert_eq!(now[0].as_deref(), Some("cancelled"), "{now:?}");
    assert_eq!(now[1].as_deref(), Some("cancelled"), "{now:?}");
    assert!(now[2..].iter().all(Option::is_none), "{now:?}");
    // The freed places are the tenant's again.
    let r = api
        .post(
            Some(token),
            "/v1/runs",
            &json!({"flow": "Child", "input": {"n": 1}}),
        )
        .await;
    r.ok("a start after the cancel");

    // Purging the other tenant drops its waiting starts with it.
    api.delete(Some(ADMIN), "/v1/tenants/purged")
        .await
        .ok("purge");
    // A run that ends frees a place: any start still waiting would be tried.
    let (token, _) = &parents[0];
    let quick = id_of(&api.start(token, "Child", json!({"n": 2})).await);
    clock.advance(3_600_000);
    api.wait_finished(token, &quick).await;
    server.stop().await;

    // Nothing of either parent's waiting starts is left to carry out.
    assert_eq!(outbox_left(&dir).await, 0, "waiting starts left behind");
    let (server, api) = server_on(&dir, &clock).await;
    let (token, parent) = &parents[0];
    let now = children(&api, token, parent, N).await;
    assert!(now[2..].iter().all(Option::is_none), "{now:?}");
    server.stop().await;
    let store = Store::open(
        &format!("sqlite://{}", dir.join("eflow.db").display()),
        Durability::Normal,
    )
    .await
    .expect("open the store");
    let purged = &parents[1].1;
    for i in 0..N {
        assert!(
            store.load_run(&child(purged, i)).await.unwrap().is_none(),
            "a child of the purged tenant exists"
        );
    }
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the deployed-bundle cache, against the real binary ---------------------

/// The IR of a bundle of about `mb` MB: one flow of a chain of steps;
/// `n` makes it distinct.
fn large_ir(n: usize, mb: usize) -> Value {
    let steps = mb * 4000;
    let nodes: Vec<Value> = (0..steps)
        .map(|i| {
            json!({
                "id": format!("s{i}"),
                "call": {"step": {"contract": "big.Work"}},
                "inputs": {"n": {"param": {"name": "n"}}},
                "retry": {"max_attempts": 1, "backoff": {"kind": "exponential", "initial_ms": 10000, "max_ms": 600000}},
                "output": {"kind": "int"}
            })
        })
        .collect();
    let positions: serde_json::Map<String, Value> = (0..steps)
        .map(|i| {
            (
                format!("s{i}"),
                json!({"file": "big.eflow", "line": i + 5, "column": 9}),
            )
        })
        .collect();
    let flow = json!({
            "name": "Big",
            "module": "big",
            "hash": "",
            "params": [{"name": "n", "type": {"kind": "int"}}],
            "output": {"kind": "int"},
            "nodes": nodes,
            "conditions": [],
            "result": {"node": {"id": format!("s{}", steps - 1)}},
            "types": {},
            "contracts": {"big.Work": {"kind": "remote", "params": [{"name": "n", "type": {"kind": "int"}, "optional": false}], "output": {"kind": "int"}}},
            "bindings": {"test": {"big.Work": {"connector": "sim", "config": {"duration": 1000 + n}}}},
            "source_map": {"flow": {"file": "big.eflow", "line": 3, "column": 6}, "nodes": positions}
    });
    let mut flow: eflow_ir::Flow = serde_json::from_value(flow).expect("a flow");
    flow.hash = flow.compute_hash();
    json!({"ir_version": eflow_ir::IR_VERSION, "flows": [flow]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_large_deploys_keep_memory_bounded_by_the_bundle_cache() {
    const DEPLOYS: usize = 16;
    let server = eflow("limits-bundles", &["--bundle-cache-bytes", "8000000"]).await;
    let pid = server.child.id();
    let api = Api::new(format!("http://{}", server.addr));
    let token = api.create_tenant("big", json!({})).await;
    // The bodies first: making them is no part of what is measured, and
    // would keep the client from sending while it makes them.
    let bodies: Vec<Vec<u8>> = (0..DEPLOYS)
        .map(|n| serde_json::to_vec(&json!({"ir": large_ir(n, 4), "env": "test"})).expect("json"))
        .collect();
    let before = proc_mb(pid, "VmRSS");
    let started = Instant::now();
    let mut deploys = Vec::new();
    for body in bodies {
        let (api, token) = (Api::new(format!("http://{}", server.addr)), token.clone());
        deploys.push(tokio::spawn(async move {
            let r = api
                .post_raw(Some(&token), "/v1/flows", Some("application/json"), body)
                .await;
            r.ok("a large deploy")["bundle"]
                .as_str()
                .expect("a bundle id")
                .to_string()
        }));
    }
    let mut bundles = Vec::new();
    for d in deploys {
        bundles.push(d.await.expect("a deploy"));
    }
    bundles.sort();
    bundles.dedup();
    assert_eq!(bundles.len(), DEPLOYS, "each deploy is its own bundle");
    let after = proc_mb(pid, "VmRSS");
    let peak = proc_mb(pid, "VmHWM");
    eprintln!(
        "{DEPLOYS} deploys in {:?}: {before:.0} MB before, {after:.0} MB after (peak {peak:.0} MB)",
        started.elapsed()
    );
    // A bundle dropped from the cache is read again when a run needs it.
    let run = api
        .post(
            Some(&token),
            "/v1/runs",
            &json!({"flow": "Big", "input": {"n": 1}}),
        )
        .await
        .ok("a run of an evicted bundle");
    assert_eq!(run["status"], "running", "{run}");
    // What the requests held is given back: sixteen bundles decoded hold
    // about 800 MB; the cache keeps at most 8 MB of IR. The allocator returns
    // freed memory to the system as the server goes on working, so the
    // server is asked something while it is watched.
    const BOUND_MB: f64 = 300.0;
    let now = poll_until(
        &format!("the server to hold less than {BOUND_MB} MB more than before the deploys ({before:.0} MB)"),
        DEADLINE,
        || async {
            for _ in 0..20 {
                api.get(Some(&token), "/v1/flows").await.ok("flows");
            }
            let now = proc_mb(pid, "VmRSS");
            (now - before < BOUND_MB).then_some(now)
        },
    )
    .await;
    eprintln!("then {now:.0} MB");
}
