//! `eflowc`: check, compile, format and explain `.eflow` files.
//!
//! Exit codes: 0 clean, 1 errors (or warnings with `--deny-warnings`, or files that
//! `fmt --check` would change), 2 usage or I/O error.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use eflow_compiler::analysis::{Analysis, FsLoader, Loader};
use eflow_compiler::diagnostics::render::{self, Format, RenderOptions};
use eflow_compiler::diagnostics::{Code, Diagnostic, Severity, explain};
use eflow_compiler::{fmt, ir};

#[derive(Parser)]
#[command(
    name = "eflowc",
    version,
    about = "The eflow compiler: check, compile and format .eflow flows"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct DiagOpts {
    /// How to print diagnostics: human (terminal), json, sarif (SARIF 2.1.0, for code
    /// scanning) or github (workflow commands, for pull request annotations).
    #[arg(long, value_enum, default_value_t = FormatArg::Human)]
    format: FormatArg,
    /// Fail (exit 1) on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    /// Colour in human output.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
}

#[derive(Subcommand)]
enum Command {
    /// Check files and directories (searched for .eflow files) and print diagnostics.
    Check {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        #[command(flatten)]
        diag: DiagOpts,
    },
    /// Check, then write the flow IR: to stdout, to one file (-o), or one file per
    /// flow (--out-dir). Nothing is written if there are errors.
    Compile {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Write all flows as one bundle to this file.
        #[arg(short = 'o', long, conflicts_with = "out_dir")]
        output: Option<PathBuf>,
        /// Write one bundle per flow, `<flow>.json`, into this directory.
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// Indent the JSON for people to read (the default is compact).
        #[arg(long)]
        pretty: bool,
        #[command(flatten)]
        diag: DiagOpts,
    },
    /// Format files in place, or with --check list those that are not formatted.
    Fmt {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Change nothing; exit 1 if any file would change.
        #[arg(long)]
        check: bool,
    },
    /// Print the changes from OLD to NEW (each a folder or file of sources or of
    /// compiled IR) and whom each breaks; exit 1 if any is breaking.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// human, json, sarif or github, as for `check`.
        #[arg(long, value_enum, default_value_t = FormatArg::Human)]
        format: FormatArg,
        /// Colour in human output.
        #[arg(long, value_enum, default_value_t = Color::Auto)]
        color: Color,
    },
    /// Explain a diagnostic code, e.g. `eflowc explain E0200`.
    Explain {
        /// A code such as E0200 or W0001.
        code: String,
    },
    /// Print the JSON Schema of the flow IR.
    Schema,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Human,
    Json,
    Sarif,
    Github,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Command::Check { paths, diag } => {
            let analysis = analyze(&paths)?;
            let diags = analysis.diagnostics();
            print_diagnostics(&analysis, &diags, &diag, false)?;
            // As for `compile`: the process ends here.
            std::mem::forget(analysis);
            Ok(exit_for(&diags, diag.deny_warnings))
        }
        Command::Compile {
            paths,
            output,
            out_dir,
            pretty,
            diag,
        } => {
            let analysis = analyze(&paths)?;
            let mut diags = analysis.diagnostics();
            let to_stdout = output.is_none() && out_dir.is_none();
            let failed = exit_for(&diags, diag.deny_warnings) != ExitCode::SUCCESS;
            let ir = if failed {
                None
            } else {
                let emitted = if pretty {
                    eflow_compiler::lower::emit(&analysis, None).map(Ir::Pretty)
                } else {
                    eflow_compiler::lower::emit_sealed(&analysis, None).map(Ir::Compact)
                };
                match emitted {
                    Ok(ir) => Some(ir),
                    Err(errs) => {
                        diags.extend(errs);
                        None
                    }
                }
            };
            print_diagnostics(&analysis, &diags, &diag, to_stdout)?;
            let Some(ir) = ir else {
                return Ok(ExitCode::from(1));
            };
            if let Some(path) = output {
                write_atomic(&path, |w| ir.write(w))?;
            } else if let Some(dir) = out_dir {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
                for name in ir.flow_names() {
                    let one = ir.subset(name);
                    write_atomic(&dir.join(format!("{name}.json")), |w| one.write(w))?;
                }
            } else {
                let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                ignore_broken_pipe(ir.write(&mut out).and_then(|_| out.flush()))
                    .map_err(|e| format!("cannot write to stdout: {e}"))?;
            }
            // The process ends here: freeing the analysis and the IR, millions of
            // small allocations, took a third of the run time (0.1 s for 100,000
            // lines) for memory the system takes back at exit anyway.
            std::mem::forget(analysis);
            std::mem::forget(ir);
            Ok(exit_for(&diags, diag.deny_warnings))
        }
        Command::Fmt { paths, check } => format_files(&paths, check),
        Command::Diff {
            old,
            new,
            format,
            color,
        } => {
            use eflow_compiler::diff::{Side, report};
            let read = |which: &str, p: &PathBuf| {
                Side::read(p).map_err(|e| match e {
                    eflow_compiler::bundles::Error::Diagnostics(d) => format!(
                        "{which} `{}` has {} error(s): run `eflowc check {}`",
                        p.display(),
                        d.len(),
                        p.display()
                    ),
                    e => format!("{which}: {e}"),
                })
            };
            let (before, after) = (read("OLD", &old)?, read("NEW", &new)?);
            let (diags, sources) = report(&before, &after);
            let opts = DiagOpts {
                format,
                deny_warnings: false,
                color,
            };
            print_rendered(&diags, &sources, &opts, false)?;
            let breaking = diags.iter().any(|d| d.severity == Severity::Error);
            if matches!(format, FormatArg::Human) && diags.is_empty() {
                eprintln!("no changes");
            }
            Ok(if breaking {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Explain { code } => match Code::parse(&code) {
            Some(c) => {
                write_stdout(&format!("{}\n", explain::render_explain(c)))?;
                Ok(ExitCode::SUCCESS)
            }
            None => Err(format!(
                "unknown diagnostic code `{code}`; codes look like E0200 or W0001 (see docs/language.md, \"Diagnostics\")"
            )),
        },
        Command::Schema => {
            write_stdout(&ir::schema_json())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The IR as `compile` writes it: compact JSON kept from sealing each flow, or the
/// bundle itself, to indent.
enum Ir {
    Compact(ir::SealedBundle),
    Pretty(ir::Bundle),
}

impl Ir {
    fn flow_names(&self) -> Vec<&str> {
        match self {
            Ir::Compact(b) => b.flows.iter().map(|f| f.name.as_str()).collect(),
            Ir::Pretty(b) => b.flows.iter().map(|f| f.name.as_str()).collect(),
        }
    }

    /// The flow named `name` and the subflows it calls, for `--out-dir`.
    fn subset(&self, name: &str) -> Ir {
        match self {
            Ir::Compact(b) => Ir::Compact(b.subset(name)),
            Ir::Pretty(b) => Ir::Pretty(b.subset(name)),
        }
    }

    fn write(&self, w: &mut dyn Write) -> std::io::Result<()> {
        match self {
            Ir::Compact(b) => b.write_json(w),
            Ir::Pretty(b) => b.write_pretty_json(w),
        }
    }
}

fn analyze(paths: &[PathBuf]) -> Result<Analysis, String> {
    Analysis::from_paths(paths, &FsLoader).map_err(|e| e.to_string())
}

fn exit_for(diags: &[Diagnostic], deny_warnings: bool) -> ExitCode {
    if diags.iter().any(|d| d.is_error() || deny_warnings) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn print_diagnostics(
    analysis: &Analysis,
    diags: &[Diagnostic],
    opts: &DiagOpts,
    stdout_busy: bool,
) -> Result<(), String> {
    print_rendered(diags, &analysis.sources, opts, stdout_busy)
}

fn print_rendered(
    diags: &[Diagnostic],
    sources: &eflow_compiler::analysis::Sources,
    opts: &DiagOpts,
    stdout_busy: bool,
) -> Result<(), String> {
    let format = match opts.format {
        FormatArg::Human => Format::Human,
        FormatArg::Json => Format::Json,
        FormatArg::Sarif => Format::Sarif,
        FormatArg::Github => Format::Github,
    };
    let color = match opts.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let machine = !matches!(format, Format::Human);
    if !machine && diags.is_empty() {
        return Ok(());
    }
    let render_opts = RenderOptions {
        color: color && !machine,
        ..RenderOptions::default()
    };
    let text = render::render(format, diags, sources, &render_opts);
    // Machine formats go to stdout so they can be redirected to a file, unless
    // stdout carries the compiled IR.
    if machine && !stdout_busy {
        write_stdout(&text)
    } else {
        ignore_broken_pipe(std::io::stderr().write_all(text.as_bytes()))
            .map_err(|e| format!("cannot write diagnostics: {e}"))
    }
}

/// Write to stdout; a reader that went away (`eflowc … | head`) is not an error.
fn write_stdout(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    ignore_broken_pipe(out.write_all(text.as_bytes()).and_then(|_| out.flush()))
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

fn ignore_broken_pipe(r: std::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn format_files(paths: &[PathBuf], check: bool) -> Result<ExitCode, String> {
    let mut files = Vec::new();
    for p in paths {
        eflow_compiler::analysis::collect_eflow_files(p, &mut files).map_err(|e| e.to_string())?;
    }
    let mut unformatted = 0;
    let mut broken = 0;
    for f in &files {
        let text = match FsLoader.read(f) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                eprintln!(
                    "error: `{}` is not UTF-8 ({e}); run `eflowc check` on it, convert it to UTF-8, then format",
                    f.display()
                );
                broken += 1;
                continue;
            }
            Err(e) => return Err(format!("cannot read `{}`: {e}", f.display())),
        };
        match fmt::format_source(&text) {
            Ok(formatted) if formatted == text => {}
            Ok(formatted) => {
                if check {
                    write_stdout(&format!("{}\n", f.display()))?;
                    unformatted += 1;
                } else {
                    write_atomic(f, |w| w.write_all(formatted.as_bytes()))?;
                }
            }
            Err(n) => {
                eprintln!(
                    "error: `{}` has {n} syntax error{}; run `eflowc check` on it, fix them, then format",
                    f.display(),
                    if n == 1 { "" } else { "s" }
                );
                broken += 1;
            }
        }
    }
    if check && unformatted > 0 {
        eprintln!(
            "{unformatted} file{} not formatted; run `eflowc fmt` on {}",
            if unformatted == 1 { " is" } else { "s are" },
            if unformatted == 1 { "it" } else { "them" }
        );
    }
    Ok(if unformatted > 0 || broken > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Write through a temporary file and rename, so a crash never leaves half a file.
fn write_atomic(
    path: &std::path::Path,
    content: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out"),
        std::process::id()
    ));
    std::fs::File::create(&tmp)
        .and_then(|f| {
            let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
            content(&mut w)?;
            w.into_inner().map_err(|e| e.into_error())?;
            Ok(())
        })
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("cannot write `{}`: {e}", path.display())
        })
}
