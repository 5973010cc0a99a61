//! End-to-end test with Neovim's built-in LSP client, headless: the plugin in
//! `editors/nvim` starts the server for a `.eflow` file, the pushed diagnostics
//! arrive, hover and completion answer (`editors/nvim/test/headless.lua` checks
//! them). Ignored with the reason when the build found no `nvim` (see `build.rs`);
//! `tests/tools.rs` fails in CI when that happens.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
#[cfg_attr(
    not(eflow_has_nvim),
    ignore = "`nvim` is not installed (Debian: apt-get install -y neovim; then `touch lsp/build.rs` to look again)"
)]
fn neovim_gets_diagnostics_hover_and_completion() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("temp dir");
    let ws = dir.path();
    // A workspace with the examples, one of them misspelling a name.
    for name in ["retraining.eflow", "shared/catalog.eflow"] {
        let to = ws.join(name);
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        std::fs::copy(repo.join("examples").join(name), &to).expect("copy example");
    }
    let file = ws.join("retraining.eflow");
    let text = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, text.replacen("spec: spec)", "spec: specc)", 1)).expect("write");
    std::fs::create_dir(ws.join(".git")).expect("root marker");
    let out = ws.join("report.txt");

    let mut child = Command::new("nvim")
        .args(["--headless", "--clean", "-n", "-c"])
        .arg(format!(
            "luafile {}",
            repo.join("editors/nvim/test/headless.lua").display()
        ))
        .env("EFLOW_LSP", env!("CARGO_BIN_EXE_eflow-lsp"))
        .env("EFLOW_NVIM_PLUGIN", repo.join("editors/nvim"))
        .env("EFLOW_FILE", &file)
        .env("EFLOW_OUT", &out)
        .env("XDG_CACHE_HOME", ws.join(".cache"))
        .env("XDG_STATE_HOME", ws.join(".state"))
        .env("XDG_DATA_HOME", ws.join(".data"))
        .spawn()
        .expect("start nvim");
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for nvim") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("nvim did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let report = std::fs::read_to_string(&out).unwrap_or_default();
    println!("{report}");
    assert!(status.success(), "nvim reported a failure:\n{report}");
    for check in [
        "ok filetype",
        "ok client attached",
        "ok diagnostics",
        "ok hover",
        "ok completion",
    ] {
        assert!(
            report.lines().any(|l| l.starts_with(check)),
            "`{check}` missing:\n{report}"
        );
    }
}
