//! `eflow`: the server (`eflow serve`), its client commands and `eflow bench`.

use clap::Parser;
use eflow_runtime::cli::{Cli, Command};
use eflow_runtime::server::{Options, Server};

/// mimalloc: 10-25 % more transitions/s than glibc malloc in `eflow bench`
/// (BENCHMARKS.md), for a higher but still flat resident floor.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // Options from a config file join the command line before it is parsed,
    // so clap checks them as it checks the rest.
    let args = match eflow_runtime::cli::config::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    let filter = tracing_subscriber::EnvFilter::try_from_env("EFLOW_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match cli.command {
            Command::Serve(_) => "info,sqlx=warn",
            _ => "warn,sqlx=warn",
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Migrate(args) => migrate(args).await,
            Command::Bench(args) if args.schedule.schedules.is_some() => {
                eflow_runtime::bench::schedules::run(args).await
            }
            Command::Bench(args) if args.console.console => {
                eflow_runtime::bench::console::run(args).await
            }
            Command::Bench(args) => eflow_runtime::bench::run(args).await,
            Command::BenchRemote(args) => eflow_runtime::bench::remote::serve(args).await,
            other => eflow_runtime::cli::run_client(other).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The stores' URLs from the options, with their embedded defaults in `data`.
fn store_urls(args: &eflow_runtime::cli::StoreArgs) -> (String, String) {
    let o = Options::new(args.data.clone(), ([127, 0, 0, 1], 0).into());
    (
        args.store.clone().unwrap_or(o.store),
        args.history_store.clone().unwrap_or(o.history_store),
    )
}

async fn migrate(args: eflow_runtime::cli::StoreArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use eflow_runtime::schema::redact;
    let (store, history) = store_urls(&args);
    if store.starts_with("sqlite://") || history.starts_with("sqlite://") {
        std::fs::create_dir_all(&args.data)
            .with_context(|| format!("cannot create {}", args.data.display()))?;
    }
    let m = eflow_runtime::store::Store::migrate(&store)
        .await
        .with_context(|| format!("cannot migrate the engine store {}", redact(&store)))?;
    report_migration("engine store", &store, m);
    let m = eflow_runtime::history::HistoryStore::migrate(&history)
        .await
        .with_context(|| format!("cannot migrate the history store {}", redact(&history)))?;
    report_migration("history store", &history, m);
    Ok(())
}

fn report_migration(what: &str, url: &str, m: eflow_runtime::schema::Migrated) {
    let url = eflow_runtime::schema::redact(url);
    if m.from == m.to {
        println!("{what} {url}: at schema version {}, nothing to do", m.to);
    } else {
        println!(
            "{what} {url}: schema version {} -> {}",
            if m.from == 0 {
                "none".to_string()
            } else {
                m.from.to_string()
            },
            m.to
        );
    }
}

async fn serve(args: eflow_runtime::cli::ServeArgs) -> anyhow::Result<()> {
    let (store, history) = store_urls(&args.stores);
    let data = args.stores.data.clone();
    let mut o = Options::new(data.clone(), args.listen);
    o.store = store;
    o.history_store = history;
    o.bus = args.bus;
    o.roles = args.role;
    o.durability = args.durability;
    o.shards = args.shards;
    o.public_url = args.public_url;
    o.admin_token = args.admin_token;
    o.allow_egress = args.allow_egress;
    o.max_answer_bytes = args.max_answer_bytes;
    o.bundle_cache_bytes = args.bundle_cache_bytes;
    o.http.max_connections = args.max_connections;
    o.http.header_timeout = args.header_timeout;
    o.http.body_timeout = args.body_timeout;
    o.http.max_deploy_bytes = args.max_deploy_bytes;
    o.http.max_value_bytes = args.max_value_bytes;
    o.quotas.max_schedules = args.max_schedules_per_tenant;
    o.retention.sweep_after = args.sweep_after;
    o.retention.retry_window = args.retry_window;
    o.retention.history_retention = args.history_retention;
    o.ui = eflow_runtime::ui::Options::for_listen(args.ui_no_login, args.listen)
        .map_err(|e| anyhow::anyhow!(e))?;
    let server = Server::start(o).await?;
    if server.new_admin_token.is_some() {
        eprintln!(
            "eflow: created an admin token in {}; the CLI uses it for this server",
            data.join("admin-token").display()
        );
    }
    if args.role.api {
        eprintln!(
            "eflow: serving the API on http://{addr} and the web console on http://{addr}/ui (Ctrl-C or SIGTERM stops)",
            addr = server.addr
        );
    } else {
        eprintln!(
            "eflow: running as {roles}, with /metrics and /v1/health on http://{addr} (Ctrl-C or SIGTERM stops)",
            roles = args.role.names(),
            addr = server.addr
        );
    }
    let signal = stop_signal().await?;
    eprintln!("eflow: {signal} received");
    eprintln!("eflow: stopping: finishing the work in hand");
    server.stop().await;
    eprintln!("eflow: stopped");
    Ok(())
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM, which service managers (systemd, Docker,
/// Kubernetes) send to stop a process: both stop the server the same clean way.
async fn stop_signal() -> anyhow::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").map_err(Into::into),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}
