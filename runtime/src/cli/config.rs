//! `--config FILE`: the options of `eflow serve` and `eflow migrate` from a
//! TOML file, keyed by their long names.
//!
//! ```toml
//! store = "postgres://eflow@db/eflow"
//! bus = "nats://nats:4222"
//! role = ["engine", "scheduler"]   # or "engine,scheduler"
//! shards = 64
//! ```
//!
//! The file's options join the command line before clap parses it, so they
//! are checked as if typed, and clap stays the one definition of every
//! option. An option given on the command line or in its environment
//! variable is not taken from the file: command line, then environment,
//! then file, then the default. A key that is no option of `eflow serve` is
//! an error naming it; one that is an option of `serve` but not of
//! `migrate` is ignored by `migrate`, so both read the same file.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::CommandFactory;

use super::Cli;

/// `args` (the process's, program name first) with the config file's
/// options added, when the command is `serve` or `migrate` and a file is
/// named by `--config` or `EFLOW_CONFIG`.
pub fn expand(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(command) = args.get(1).and_then(|a| a.to_str()) else {
        return Ok(args);
    };
    if command != "serve" && command != "migrate" {
        return Ok(args);
    }
    let Some(path) = config_path(&args) else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("the config file {} is not valid TOML", path.display()))?;
    let cli = Cli::command();
    let serve = cli
        .find_subcommand("serve")
        .expect("`serve` is a subcommand");
    let this = cli
        .find_subcommand(command)
        .expect("the command was matched above");
    let mut out = args.clone();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()))
        else {
            let mut known: Vec<&str> = serve.get_arguments().filter_map(|a| a.get_long()).collect();
            known.sort_unstable();
            bail!(
                "{}: `{key}` is not an option of `eflow serve`; the keys are its long options: {}",
                path.display(),
                known.join(", ")
            );
        };
        if long == "config" {
            bail!(
                "{}: a config file cannot name another (`config`)",
                path.display()
            );
        }
        if !this
            .get_arguments()
            .any(|a| a.get_long() == Some(long.as_str()))
        {
            continue;
        }
        let given = args.iter().skip(2).any(|a| {
            a.to_str()
                .is_some_and(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")))
        });
        let in_env = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some());
        if given || in_env {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        match value {
            toml::Value::Boolean(on) if !takes_value => {
                if on {
                    out.push(format!("--{long}").into());
                }
            }
            toml::Value::Array(items) => {
                let items = items
                    .iter()
                    .map(|item| scalar(&path, &key, item))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                if matches!(arg.get_action(), clap::ArgAction::Append) {
                    for item in items {
                        out.push(format!("--{long}={item}").into());
                    }
                } else {
                    // A list in one value (`--role api,engine`).
                    out.push(format!("--{long}={}", items.join(",")).into());
                }
            }
            other => out.push(format!("--{long}={}", scalar(&path, &key, &other)?).into()),
        }
    }
    Ok(out)
}

/// The file named by `--config FILE`, `--config=FILE` or `EFLOW_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os("EFLOW_CONFIG").map(PathBuf::from)
}

/// A value as it would be typed after `--key=`.
fn scalar(path: &std::path::Path, key: &str, v: &toml::Value) -> anyhow::Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        other => bail!(
            "{}: `{key}` must be a string, a number, a boolean or a list of them, not {}",
            path.display(),
            other.type_str()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(file: &str, args: &[&str]) -> anyhow::Result<Vec<String>> {
        let dir = std::env::temp_dir().join(format!(
            "eflow-config-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("eflow.toml");
        std::fs::write(&path, file).unwrap();
        let mut argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        argv.push("--config".into());
        argv.push(path.clone().into());
        let out = expand(argv);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(out?
            .into_iter()
            .skip(args.len() + 2)
            .map(|a| a.into_string().unwrap())
            .collect())
    }

    #[test]
    fn the_files_options_follow_the_command_line() {
        let got = expanded(
            "store = \"postgres://db/eflow\"\nrole = [\"engine\", \"scheduler\"]\nshards = 64\n",
            &["eflow", "serve", "--shards", "8"],
        )
        .unwrap();
        assert_eq!(
            got,
            ["--role=engine,scheduler", "--store=postgres://db/eflow"],
            "--shards on the command line wins; keys in the file's order (sorted)"
        );
    }

    #[test]
    fn a_repeatable_option_is_repeated() {
        let got = expanded(
            "allow_egress = [\"10.0.0.0/8\", \"*.internal\"]\n",
            &["eflow", "serve"],
        )
        .unwrap();
        assert_eq!(
            got,
            ["--allow-egress=10.0.0.0/8", "--allow-egress=*.internal"]
        );
    }

    #[test]
    fn migrate_takes_only_its_own_options_from_the_file() {
        let got = expanded(
            "store = \"postgres://db/eflow\"\nbus = \"nats://n:4222\"\n",
            &["eflow", "migrate"],
        )
        .unwrap();
        assert_eq!(got, ["--store=postgres://db/eflow"]);
    }

    #[test]
    fn an_unknown_key_is_named() {
        let e = expanded("stor = \"x\"\n", &["eflow", "serve"]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("`stor` is not an option of `eflow serve`"),
            "{msg}"
        );
        assert!(msg.contains("store"), "{msg}");
    }

    #[test]
    fn bad_toml_and_tables_are_refused() {
        let e = expanded("store = \n", &["eflow", "serve"]).unwrap_err();
        assert!(format!("{e:#}").contains("not valid TOML"), "{e:#}");
        let e = expanded("[store]\nx = 1\n", &["eflow", "serve"]).unwrap_err();
        assert!(format!("{e:#}").contains("not table"), "{e:#}");
    }

    #[test]
    fn other_commands_are_left_alone() {
        let argv: Vec<OsString> = ["eflow", "run", "get", "x", "--config", "nope"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(expand(argv.clone()).unwrap(), argv);
    }
}
