//! Tokens: identity from the token, listing without secrets, revocation,
//! expiry, rotation (tenant and admin tokens), the CLI, and the admin token
//! made on first start.

mod common;

use std::process::{Command, Output};

use common::*;
use eflow_runtime::clock::Clock;
use serde_json::{Value, json};

const EFLOW: &str = env!("CARGO_BIN_EXE_eflow");

/// Makes a token with the admin token; returns (id, secret).
async fn make_token(api: &Api, path: &str, body: Value) -> (String, String) {
    let r = api.post(Some(ADMIN), path, &body).await.ok("create token");
    (
        r["token"]["id"].as_str().expect("an id").to_string(),
        r["secret"].as_str().expect("a secret").to_string(),
    )
}

async fn whoami(api: &Api, token: &str) -> Resp {
    api.get(Some(token), "/v1/whoami").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_for_a_person_is_that_person_and_lists_show_no_secret() {
    let s = TestServer::start("token-identity").await;
    let api = &s.api;
    let acme = api.create_tenant("acme", json!({})).await;
    api.create_tenant("other", json!({})).await;
    let (id, secret) = make_token(
        api,
        "/v1/tenants/acme/tokens",
        json!({"name": "alice@example.com"}),
    )
    .await;
    assert!(id.starts_with("t-"), "{id}");

    // The token's identity is its own: name, id and tenant.
    let me = whoami(api, &secret).await.ok("whoami");
    assert_eq!(me["name"], "alice@example.com", "{me}");
    assert_eq!(me["token"], id.as_str(), "{me}");
    assert_eq!(me["tenant"], "acme", "{me}");
    assert_eq!(me["admin"], false, "{me}");
    let admin = whoami(api, ADMIN).await.ok("whoami admin");
    assert_eq!(admin["admin"], true, "{admin}");
    assert_eq!(admin["name"], "admin", "{admin}");

    // The list names every token of the tenant by id, name and the last four
    // characters of its secret, and holds neither a secret nor a hash.
    for token in [ADMIN, acme.as_str(), secret.as_str()] {
        let r = api.get(Some(token), "/v1/tenants/acme/tokens").await;
        let list = r.clone().ok("list tokens");
        let items = list.as_array().expect("a list");
        assert_eq!(items.len(), 2, "{list}");
        let alice = items
            .iter()
            .find(|t| t["id"] == id.as_str())
            .expect("alice's token listed");
        assert_eq!(alice["name"], "alice@example.com");
        assert_eq!(alice["tenant"], "acme");
        assert_eq!(alice["expired"], false);
        assert!(alice.get("expires_at").is_none(), "{alice}");
        assert_eq!(alice["last4"], &secret[secret.len() - 4..]);
        for sec in [&secret, &acme] {
            assert!(!r.text.contains(sec.as_str()), "a secret in {}", r.text);
            let hash = eflow_runtime::service::token_hash(sec);
            assert!(!r.text.contains(&hash), "a hash in {}", r.text);
        }
    }

    // Only the admin makes tokens; a tenant sees only its own tenant's.
    let r = api
        .post(
            Some(&secret),
            "/v1/tenants/acme/tokens",
            &json!({"name": "mallory"}),
        )
        .await;
    assert_eq!(r.expect_error(403, "a tenant makes a token"), "forbidden");
    let r = api.get(Some(&acme), "/v1/tenants/other/tokens").await;
    assert_eq!(r.expect_error(403, "another tenant's tokens"), "forbidden");
    let r = api.get(Some(&acme), "/v1/admin/tokens").await;
    assert_eq!(r.expect_error(403, "the admin tokens"), "forbidden");
    let r = api.get(Some(ADMIN), "/v1/tenants/nobody/tokens").await;
    assert_eq!(r.expect_error(404, "no such tenant"), "not_found");

    // Bad requests say what to do and make nothing.
    for (body, code) in [
        (json!({"name": ""}), "invalid_name"),
        (json!({"name": "a\nb"}), "invalid_name"),
        (
            json!({"name": "x", "expires_in": "soon"}),
            "invalid_duration",
        ),
        (
            json!({"name": "x", "expires_at": "2001-01-01T00:00:00Z"}),
            "invalid_expiry",
        ),
        (
            json!({"name": "x", "expires_in": "1h", "expires_at": "2999-01-01T00:00:00Z"}),
            "invalid_request",
        ),
        (json!({"name": "x", "secret": "mine"}), "invalid_json"),
    ] {
        let r = api
            .post(Some(ADMIN), "/v1/tenants/acme/tokens", &body)
            .await;
        assert_eq!(r.expect_error(400, &body.to_string()), code, "{body}");
    }
    let list = api
        .get(Some(ADMIN), "/v1/tenants/acme/tokens")
        .await
        .ok("list");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_stops_working_and_a_tenant_revokes_only_itself() {
    let s = TestServer::start("token-revoke").await;
    let api = &s.api;
    let first = api.create_tenant("acme", json!({})).await;
    let (bob_id, bob) = make_token(api, "/v1/tenants/acme/tokens", json!({"name": "bob"})).await;
    let (carol_id, carol) =
        make_token(api, "/v1/tenants/acme/tokens", json!({"name": "carol"})).await;
    whoami(api, &bob).await.ok("bob works");

    // Bob may not revoke Carol.
    let r = api
        .delete(Some(&bob), &format!("/v1/tenants/acme/tokens/{carol_id}"))
        .await;
    assert_eq!(r.expect_error(403, "bob revokes carol"), "forbidden");
    whoami(api, &carol).await.ok("carol still works");

    // The admin revokes Carol: her token is unknown from then on.
    let r = api
        .delete(Some(ADMIN), &format!("/v1/tenants/acme/tokens/{carol_id}"))
        .await
        .ok("revoke carol");
    assert_eq!(r["name"], "carol");
    let r = whoami(api, &carol).await;
    assert_eq!(r.expect_error(401, "a revoked token"), "unauthenticated");
    let r = api.get(Some(&carol), "/v1/runs").await;
    assert_eq!(r.expect_error(401, "a revoked token"), "unauthenticated");

    // Bob revokes himself.
    api.delete(Some(&bob), &format!("/v1/tenants/acme/tokens/{bob_id}"))
        .await
        .ok("bob revokes bob");
    let r = whoami(api, &bob).await;
    assert_eq!(r.expect_error(401, "bob after revoking"), "unauthenticated");

    // A token is found under its own tenant only.
    api.create_tenant("other", json!({})).await;
    let first_id = whoami(api, &first).await.ok("first")["token"]
        .as_str()
        .expect("id")
        .to_string();
    let r = api
        .delete(Some(ADMIN), &format!("/v1/tenants/other/tokens/{first_id}"))
        .await;
    assert_eq!(r.expect_error(404, "under another tenant"), "not_found");
    let r = api
        .delete(Some(ADMIN), &format!("/v1/admin/tokens/{first_id}"))
        .await;
    assert_eq!(r.expect_error(404, "under the admin's"), "not_found");
    whoami(api, &first).await.ok("the first token still works");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_answers_401_token_expired() {
    let (s, clock) = TestServer::start_with_manual_clock("token-expiry", |_| {}).await;
    let api = &s.api;
    api.create_tenant("acme", json!({})).await;
    let (id, secret) = make_token(
        api,
        "/v1/tenants/acme/tokens",
        json!({"name": "temp", "expires_in": "1h"}),
    )
    .await;
    api.get(Some(&secret), "/v1/runs").await.ok("before expiry");
    clock.advance(3_599_000);
    api.get(Some(&secret), "/v1/runs")
        .await
        .ok("a second before expiry");
    clock.advance(1_000);
    let r = api.get(Some(&secret), "/v1/runs").await;
    assert_eq!(r.expect_error(401, "expired"), "token_expired");
    let list = api
        .get(Some(ADMIN), "/v1/tenants/acme/tokens")
        .await
        .ok("list");
    let t = list
        .as_array()
        .and_then(|l| l.iter().find(|t| t["id"] == id.as_str()).cloned())
        .expect("listed");
    assert_eq!(t["expired"], true, "{t}");
    assert!(t["expires_at"].is_string(), "{t}");

    // An absolute expiry works the same way.
    let at = eflow_core::time::format_rfc3339(clock.now_ms() + 60_000);
    let (_, secret) = make_token(
        api,
        "/v1/tenants/acme/tokens",
        json!({"name": "until", "expires_at": at}),
    )
    .await;
    whoami(api, &secret).await.ok("before");
    clock.advance(60_000);
    let r = whoami(api, &secret).await;
    assert_eq!(r.expect_error(401, "expired at"), "token_expired");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_a_token_replaces_its_secret_now_or_after_a_grace_period() {
    let (s, clock) = TestServer::start_with_manual_clock("token-rotate", |_| {}).await;
    let api = &s.api;
    api.create_tenant("acme", json!({})).await;
    let (id, old) = make_token(
        api,
        "/v1/tenants/acme/tokens",
        json!({"name": "ci", "expires_in": "30d"}),
    )
    .await;

    // The token rotates itself: a new secret with the same name and tenant
    // and the same lifetime; the old secret stops at once.
    let r = api
        .post(
            Some(&old),
            &format!("/v1/tenants/acme/tokens/{id}/rotate"),
            &json!({}),
        )
        .await
        .ok("rotate");
    let new = r["secret"].as_str().expect("a secret").to_string();
    let new_id = r["token"]["id"].as_str().expect("an id").to_string();
    assert_ne!(new, old);
    assert_ne!(new_id, id);
    assert_eq!(r["token"]["name"], "ci");
    assert_eq!(
        ms(&r["token"]["expires_at"]) - ms(&r["token"]["created_at"]),
        30 * 24 * 3_600_000,
        "{r:?}"
    );
    let r2 = whoami(api, &old).await;
    assert_eq!(r2.expect_error(401, "the old secret"), "unauthenticated");
    let me = whoami(api, &new).await.ok("the new secret");
    assert_eq!(me["name"], "ci");
    assert_eq!(me["tenant"], "acme");

    // With a grace period the old secret works until it ends.
    let r = api
        .post(
            Some(ADMIN),
            &format!("/v1/tenants/acme/tokens/{new_id}/rotate"),
            &json!({"grace": "10m"}),
        )
        .await
        .ok("rotate with grace");
    let newest = r["secret"].as_str().expect("a secret").to_string();
    whoami(api, &new).await.ok("in the grace period");
    whoami(api, &newest).await.ok("the newest");
    clock.advance(600_000);
    let r = whoami(api, &new).await;
    assert_eq!(
        r.expect_error(401, "after the grace period"),
        "token_expired"
    );
    whoami(api, &newest)
        .await
        .ok("the newest after the grace period");

    // Rotating an unknown token changes nothing.
    let r = api
        .post(
            Some(ADMIN),
            "/v1/tenants/acme/tokens/t-nope/rotate",
            &json!({}),
        )
        .await;
    assert_eq!(r.expect_error(404, "unknown token"), "not_found");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tokens_are_listed_rotated_and_the_last_one_is_kept() {
    let s = TestServer::start("token-admin").await;
    let api = &s.api;
    let list = api.get(Some(ADMIN), "/v1/admin/tokens").await.ok("list");
    // The one made on first start and the test's.
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t.get("tenant").is_none())
    );

    let (ops_id, ops) = make_token(api, "/v1/admin/tokens", json!({"name": "ops"})).await;
    assert_eq!(whoami(api, &ops).await.ok("ops")["admin"], true);
    let r = api
        .post(
            Some(&ops),
            &format!("/v1/admin/tokens/{ops_id}/rotate"),
            &json!({}),
        )
        .await;
    let r = r.ok("rotate the admin token");
    let ops2 = r["secret"].as_str().expect("a secret").to_string();
    assert!(ops2.starts_with("eflow_admin_"), "{ops2}");
    let r = whoami(api, &ops).await;
    assert_eq!(
        r.expect_error(401, "the old admin secret"),
        "unauthenticated"
    );
    assert_eq!(whoami(api, &ops2).await.ok("ops2")["admin"], true);

    // Revoke every admin token but the last that works: that one is kept.
    let list = api.get(Some(&ops2), "/v1/admin/tokens").await.ok("list");
    let me = whoami(api, &ops2).await.ok("me")["token"].clone();
    for t in list.as_array().unwrap() {
        if t["id"] != me {
            api.delete(
                Some(&ops2),
                &format!("/v1/admin/tokens/{}", t["id"].as_str().unwrap()),
            )
            .await
            .ok("revoke an admin token");
        }
    }
    let r = api
        .delete(
            Some(&ops2),
            &format!("/v1/admin/tokens/{}", me.as_str().unwrap()),
        )
        .await;
    assert_eq!(
        r.expect_error(409, "the last admin token"),
        "last_admin_token"
    );
    let r = whoami(api, ADMIN).await;
    assert_eq!(
        r.expect_error(401, "the revoked test token"),
        "unauthenticated"
    );
    whoami(api, &ops2).await.ok("the last admin token works");
    s.stop().await;
}

fn eflow(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(EFLOW);
    c.args(args)
        .env_remove("EFLOW_SERVER")
        .env_remove("EFLOW_TOKEN")
        .env_remove("EFLOW_DATA")
        .env("EFLOW_LOG", "error");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the eflow binary runs")
}

async fn eflow_async(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        eflow(&args, &env)
    })
    .await
    .expect("the blocking task")
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "{}", show(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_lists_creates_revokes_and_rotates_tokens() {
    let s = TestServer::start("token-cli").await;
    let server = s.addr();
    s.api.create_tenant("acme", json!({})).await;
    let run = |args: &[&str], token: &str| {
        let mut a: Vec<String> = args.iter().map(|x| x.to_string()).collect();
        a.extend([
            "--server".into(),
            server.clone(),
            "-o".into(),
            "json".into(),
        ]);
        eflow_async(a, vec![("EFLOW_TOKEN".into(), token.to_string())])
    };

    let made = json_out(
        &run(
            &[
                "token",
                "create",
                "alice@example.com",
                "--tenant",
                "acme",
                "--expires-in",
                "7d",
            ],
            ADMIN,
        )
        .await,
    );
    let alice = made["secret"].as_str().expect("a secret").to_string();
    let alice_id = made["token"]["id"].as_str().expect("an id").to_string();
    // A tenant's token lists its own tenant's tokens without naming it.
    let list = json_out(&run(&["token", "list"], &alice).await);
    let mut names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["alice@example.com", "default"], "{list}");
    // The admin must say whose.
    let o = run(&["token", "list"], ADMIN).await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(show(&o).contains("--tenant"), "{}", show(&o));
    // Rotate itself, then the old secret is refused.
    let rotated = json_out(&run(&["token", "rotate", &alice_id], &alice).await);
    let alice2 = rotated["secret"].as_str().expect("a secret").to_string();
    let r = s.api.get(Some(&alice), "/v1/whoami").await;
    assert_eq!(r.expect_error(401, "alice's old secret"), "unauthenticated");
    let new_id = rotated["token"]["id"].as_str().unwrap().to_string();
    json_out(&run(&["token", "revoke", &new_id], &alice2).await);
    let r = s.api.get(Some(&alice2), "/v1/whoami").await;
    assert_eq!(r.expect_error(401, "alice revoked"), "unauthenticated");

    // The admin token rotated with --save is written where the CLI reads it.
    let data = temp_dir("token-cli-data");
    let made = json_out(&run(&["token", "create", "ops", "--admin"], ADMIN).await);
    let ops = made["secret"].as_str().unwrap().to_string();
    let ops_id = made["token"]["id"].as_str().unwrap().to_string();
    let data_arg = data.display().to_string();
    let rotated = json_out(
        &run(
            &[
                "token", "rotate", &ops_id, "--admin", "--save", "--data", &data_arg,
            ],
            &ops,
        )
        .await,
    );
    let saved = std::fs::read_to_string(data.join("admin-token")).expect("saved");
    assert_eq!(saved, rotated["secret"].as_str().unwrap());
    assert_eq!(
        s.api
            .get(Some(&saved), "/v1/whoami")
            .await
            .ok("saved works")["name"],
        "ops"
    );
    let _ = std::fs::remove_dir_all(data);
    s.stop().await;
}

/// On first start the admin token is written to `DATA/admin-token`. When it
/// cannot be, the server does not start, says why, and stores no token that
/// nobody knows: the next start makes one and writes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_that_cannot_write_the_admin_token_fails_and_stores_none() {
    let data = temp_dir("admin-token-unwritable");
    // A directory where the file should go: opening it for writing fails.
    std::fs::create_dir_all(data.join("admin-token")).expect("mkdir");
    let options =
        || eflow_runtime::server::Options::new(data.clone(), "127.0.0.1:0".parse().expect("addr"));
    let err = match eflow_runtime::server::Server::start(options()).await {
        Ok(_) => panic!("the server started without a usable admin token"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("admin-token"), "{err}");
    assert!(err.contains("start again"), "{err}");

    // The binary exits non-zero and says the same.
    let data_arg = data.display().to_string();
    let o = eflow_async(
        vec![
            "serve".into(),
            "--data".into(),
            data_arg,
            "--listen".into(),
            "127.0.0.1:0".into(),
        ],
        vec![],
    )
    .await;
    assert!(!o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("admin-token"),
        "{}",
        show(&o)
    );

    // Once the path is free, the next start makes a token and writes it.
    std::fs::remove_dir(data.join("admin-token")).expect("rmdir");
    let server = eflow_runtime::server::Server::start(options())
        .await
        .expect("the server starts");
    let written = std::fs::read_to_string(data.join("admin-token")).expect("admin-token written");
    assert_eq!(server.new_admin_token.as_deref(), Some(written.as_str()));
    let api = Api::new(format!("http://{}", server.addr));
    let me = api
        .get(Some(&written), "/v1/whoami")
        .await
        .ok("the written token works");
    assert_eq!(me["admin"], true, "{me}");
    let list = api
        .get(Some(&written), "/v1/admin/tokens")
        .await
        .ok("admin tokens");
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "no unknown token: {list}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(data);
}
