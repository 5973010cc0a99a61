//! Rendering diagnostics in every format, from hand-made diagnostics and sources.

#[path = "support/blocks.rs"]
mod blocks;
use blocks::eflow_blocks;

use eflow_compiler::analysis::{FileId, SourceFile, Sources};
use eflow_compiler::diagnostics::explain::{explanation, render_explain};
use eflow_compiler::diagnostics::render::{Format, MAX_SARIF_RESULTS, RenderOptions, render};
use eflow_compiler::diagnostics::{Code, Diagnostic, Fix};
use eflow_compiler::syntax::ast::Span;
use serde_json::{Value, json};

const TRAIN: &str = "from \"./lib\" import Model\n\nflow Train(n: Int) -> Model {\n  let m = Fit(data: \"données\", n: 1.5)\n  return m\n}\n";
const LIB: &str = "record Model { name: String }\nremote step Fit(data: String, n: Int) -> Model\n";
const ODD: &str = "flow X() {}\n";

struct Fixture {
    sources: Sources,
    train: FileId,
    lib: FileId,
    odd: FileId,
}

fn fixture() -> Fixture {
    let mut sources = Sources::default();
    let train = sources.add(SourceFile::new("flows/train.eflow", None, TRAIN));
    let lib = sources.add(SourceFile::new("flows/lib.eflow", None, LIB));
    let odd = sources.add(SourceFile::new("odd, name: v2.eflow", None, ODD));
    Fixture {
        sources,
        train,
        lib,
        odd,
    }
}

fn at(text: &str, needle: &str) -> Span {
    let i = text.find(needle).expect("needle in text");
    Span::new(i, i + needle.len())
}

fn opts() -> RenderOptions {
    RenderOptions {
        tool_version: "9.9.9-test".to_string(),
        ..RenderOptions::default()
    }
}

/// A type error whose secondary labels are in its own file and in another one.
fn mismatch(f: &Fixture) -> Diagnostic {
    Diagnostic::new(
        Code::TypeMismatch,
        f.train,
        at(TRAIN, "1.5"),
        "expected Int, found Float",
    )
    .with_label("this is a Float — «1.5»")
    .with_secondary(
        f.lib,
        at(LIB, "n: Int"),
        "parameter `n` declared as Int here",
    )
    .with_secondary(f.train, at(TRAIN, "Fit"), "in this call")
    .with_help("write an integer such as `2`")
}

/// A message and help full of characters that GitHub's command syntax reserves.
fn awkward(f: &Fixture) -> Diagnostic {
    Diagnostic::new(
        Code::UnknownTimezone,
        f.odd,
        Span::new(0, 4),
        "100% bad: \"a,b\"\nsecond line\r\nthird",
    )
    .with_help("see: docs, page 2")
}

/// A warning on an empty span at the very end of the file.
fn at_eof(f: &Fixture) -> Diagnostic {
    Diagnostic::new(
        Code::UnusedOutput,
        f.train,
        Span::new(TRAIN.len(), TRAIN.len()),
        "output `m` is never used",
    )
}

fn render_all(format: Format, diags: &[Diagnostic], f: &Fixture) -> String {
    render(format, diags, &f.sources, &opts())
}

// ---------------------------------------------------------------------------------

#[test]
fn format_names_parse_and_print() {
    for name in ["human", "json", "sarif", "github"] {
        let format: Format = name.parse().expect("known format");
        assert_eq!(format.to_string(), name);
        assert_eq!(format.as_str(), name);
    }
    assert_eq!("SARIF".parse::<Format>(), Ok(Format::Sarif));
    assert!("xml".parse::<Format>().is_err());
    let names: Vec<String> = <Format as clap::ValueEnum>::value_variants()
        .iter()
        .filter_map(|v| clap::ValueEnum::to_possible_value(v).map(|p| p.get_name().to_string()))
        .collect();
    assert_eq!(names, ["human", "json", "sarif", "github"]);
}

// --- GitHub -------------------------------------------------------------------------

/// The output with its stop-commands token replaced by `TOKEN`, after checking it.
fn without_token(out: &str) -> String {
    let first = out.lines().next().expect("a first line");
    let token = first
        .strip_prefix("::stop-commands::")
        .expect("starts by pausing commands");
    let hash = token.strip_prefix("eflowc-").expect("token prefix");
    assert_eq!(hash.len(), 32);
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
    out.replace(token, "TOKEN")
}

#[test]
fn github_commands_exact() {
    let f = fixture();
    let out = render_all(Format::Github, &[mismatch(&f), awkward(&f), at_eof(&f)], &f);
    let expected = "\
::stop-commands::TOKEN
flows/train.eflow:4:35: error[E0200]: expected Int, found Float
  flows/lib.eflow:2:31: note: parameter `n` declared as Int here
  flows/train.eflow:4:11: note: in this call
  help: write an integer such as `2`
odd, name: v2.eflow:1:1: error[E0401]: 100% bad: \"a,b\"
    second line
    third
  help: see: docs, page 2
flows/train.eflow:6:2: warning[W0001]: output `m` is never used
::TOKEN::
::error file=flows/train.eflow,line=4,col=35,endLine=4,endColumn=38,title=E0200::expected Int, found Float%0Ahelp: write an integer such as `2`
::error file=odd%2C name%3A v2.eflow,line=1,col=1,endLine=1,endColumn=5,title=E0401::100%25 bad: \"a,b\"%0Asecond line%0D%0Athird%0Ahelp: see: docs, page 2
::warning file=flows/train.eflow,line=6,col=2,endLine=6,endColumn=2,title=W0001::output `m` is never used
eflowc: 2 errors, 1 warning
";
    assert_eq!(without_token(&out), expected);
}

#[test]
fn github_token_is_stable_and_depends_on_content() {
    let f = fixture();
    let one = render_all(Format::Github, &[mismatch(&f)], &f);
    assert_eq!(one, render_all(Format::Github, &[mismatch(&f)], &f));
    let two = render_all(Format::Github, &[at_eof(&f)], &f);
    assert_ne!(one.lines().next(), two.lines().next());
}

#[test]
fn github_text_from_sources_cannot_inject_commands() {
    let f = fixture();
    let evil = Diagnostic::new(
        Code::Syntax,
        f.train,
        Span::new(0, 4),
        "bad\n::error file=x::injected\n::stop-commands::x",
    )
    .with_help("\n::warning::also injected");
    let out = render_all(Format::Github, &[evil], &f);
    let token = out
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("::stop-commands::"))
        .expect("token");
    let resume = format!("::{token}::");
    let mut paused = true;
    let mut commands = 0;
    for line in out.lines().skip(1) {
        if line == resume {
            paused = false;
        } else if !paused && line.trim_start().starts_with("::") {
            commands += 1;
        }
    }
    assert!(!paused, "commands are resumed");
    assert_eq!(commands, 1, "only the real annotation is a command:\n{out}");
    assert!(out.contains(
        "::error file=flows/train.eflow,line=1,col=1,endLine=1,endColumn=5,title=E0001::bad%0A::error file=x::injected%0A::stop-commands::x%0Ahelp: %0A::warning::also injected\n"
    ));
}

#[test]
fn github_summary_mentions_the_annotation_limit_only_when_reached() {
    let f = fixture();
    let errors: Vec<Diagnostic> = (0..11)
        .map(|i| {
            Diagnostic::new(
                Code::UnknownName,
                f.lib,
                Span::new(i, i + 1),
                format!("n{i}"),
            )
        })
        .collect();
    let out = render_all(Format::Github, &errors, &f);
    assert!(out.ends_with(
        "eflowc: 11 errors, 0 warnings (GitHub shows at most 10 of each kind inline; see the full list in the log above)\n"
    ));
    assert_eq!(
        out.lines().filter(|l| l.starts_with("::error ")).count(),
        11
    );
    assert_eq!(
        out.lines().filter(|l| l.contains("error[E0100]")).count(),
        11
    );

    let out = render_all(Format::Github, &errors[..10], &f);
    assert!(out.ends_with("eflowc: 10 errors, 0 warnings\n"));

    assert_eq!(
        render_all(Format::Github, &[], &f),
        "eflowc: no problems found\n"
    );
}

// --- JSON ---------------------------------------------------------------------------

#[test]
fn json_exact() {
    let f = fixture();
    let out = render_all(Format::Json, &[mismatch(&f), at_eof(&f)], &f);
    let expected = r#"{
  "version": 1,
  "diagnostics": [
    {
      "code": "E0200",
      "severity": "error",
      "message": "expected Int, found Float",
      "file": "flows/train.eflow",
      "span": {
        "start": 92,
        "end": 95
      },
      "line": 4,
      "column": 35,
      "end_line": 4,
      "end_column": 38,
      "label": "this is a Float — «1.5»",
      "labels": [
        {
          "file": "flows/lib.eflow",
          "span": {
            "start": 60,
            "end": 66
          },
          "line": 2,
          "column": 31,
          "end_line": 2,
          "end_column": 37,
          "message": "parameter `n` declared as Int here"
        },
        {
          "file": "flows/train.eflow",
          "span": {
            "start": 67,
            "end": 70
          },
          "line": 4,
          "column": 11,
          "end_line": 4,
          "end_column": 14,
          "message": "in this call"
        }
      ],
      "help": "write an integer such as `2`",
      "fixes": []
    },
    {
      "code": "W0001",
      "severity": "warning",
      "message": "output `m` is never used",
      "file": "flows/train.eflow",
      "span": {
        "start": 109,
        "end": 109
      },
      "line": 6,
      "column": 2,
      "end_line": 6,
      "end_column": 2,
      "label": null,
      "labels": [],
      "help": null,
      "fixes": []
    }
  ],
  "summary": {
    "errors": 1,
    "warnings": 1
  }
}
"#;
    assert_eq!(out, expected);
}

#[test]
fn json_clamps_spans() {
    let f = fixture();
    let e = TRAIN.find('é').expect("é");
    let diags = [
        // Past the end of the file.
        Diagnostic::new(Code::Syntax, f.lib, Span::new(500, 900), "past"),
        // Inverted.
        Diagnostic::new(Code::Syntax, f.lib, Span::new(10, 3), "inverted"),
        // Both ends inside the two bytes of `é`.
        Diagnostic::new(Code::Syntax, f.train, Span::new(e + 1, e + 1), "mid-char"),
        // A file that is not in the sources.
        Diagnostic::new(Code::Syntax, FileId(42), Span::new(1, 2), "nowhere"),
    ];
    let out = render_all(Format::Json, &diags, &f);
    let v: Value = serde_json::from_str(&out).expect("valid JSON");
    let d = &v["diagnostics"];
    let lib_end = LIB.len() as u64 - 1;
    assert_eq!(d[0]["span"]["start"], lib_end);
    assert_eq!(d[0]["span"]["end"], lib_end);
    assert_eq!(
        (d[0]["line"].as_u64(), d[0]["column"].as_u64()),
        (Some(2), Some(47))
    );
    assert_eq!(d[1]["span"]["start"], 10);
    assert_eq!(d[1]["span"]["end"], 10);
    assert_eq!(d[2]["span"]["start"], e as u64);
    assert_eq!(d[2]["span"]["end"], e as u64 + 2);
    assert_eq!(d[3]["file"], "<unknown file>");
    assert_eq!(d[3]["line"], 1);
    assert_eq!(v["summary"]["errors"], 4);
}

#[test]
fn json_without_diagnostics_is_still_a_document() {
    let f = fixture();
    let v: Value = serde_json::from_str(&render_all(Format::Json, &[], &f)).expect("JSON");
    assert_eq!(v["diagnostics"], Value::Array(vec![]));
    assert_eq!(v["summary"]["errors"], 0);
}

// --- SARIF --------------------------------------------------------------------------

/// The object kinds of the SARIF 2.1.0 schema that we emit, with their required and
/// allowed properties. The schema sets `additionalProperties: false` on these, so an
/// unknown key is as invalid as a missing one.
fn sarif_kind(kind: &str) -> (&'static [&'static str], &'static [&'static str]) {
    match kind {
        "log" => (
            &["version", "runs"],
            &[
                "$schema",
                "version",
                "runs",
                "inlineExternalProperties",
                "properties",
            ],
        ),
        "run" => (
            &["tool"],
            &[
                "tool",
                "invocations",
                "conversion",
                "language",
                "versionControlProvenance",
                "originalUriBaseIds",
                "artifacts",
                "logicalLocations",
                "graphs",
                "results",
                "automationDetails",
                "runAggregates",
                "baselineGuid",
                "redactionTokens",
                "defaultEncoding",
                "defaultSourceLanguage",
                "newlineSequences",
                "columnKind",
                "externalPropertyFileReferences",
                "threadFlowLocations",
                "taxonomies",
                "addresses",
                "translations",
                "policies",
                "webRequests",
                "webResponses",
                "specialLocations",
                "properties",
            ],
        ),
        "tool" => (&["driver"], &["driver", "extensions", "properties"]),
        "driver" => (
            &["name"],
            &[
                "guid",
                "name",
                "organization",
                "product",
                "productSuite",
                "shortDescription",
                "fullDescription",
                "fullName",
                "version",
                "semanticVersion",
                "dottedQuadFileVersion",
                "releaseDateUtc",
                "downloadUri",
                "informationUri",
                "globalMessageStrings",
                "notifications",
                "rules",
                "taxa",
                "locations",
                "language",
                "contents",
                "isComprehensive",
                "localizedDataSemanticVersion",
                "minimumRequiredLocalizedDataSemanticVersion",
                "associatedComponent",
                "translationMetadata",
                "supportedTaxonomies",
                "properties",
            ],
        ),
        "rule" => (
            &["id"],
            &[
                "id",
                "deprecatedIds",
                "guid",
                "deprecatedGuids",
                "name",
                "deprecatedNames",
                "shortDescription",
                "fullDescription",
                "messageStrings",
                "defaultConfiguration",
                "helpUri",
                "help",
                "relationships",
                "properties",
            ],
        ),
        "multiformat" => (&["text"], &["text", "markdown", "properties"]),
        "configuration" => (
            &[],
            &["enabled", "level", "rank", "parameters", "properties"],
        ),
        "result" => (
            &["message"],
            &[
                "guid",
                "correlationGuid",
                "ruleId",
                "ruleIndex",
                "rule",
                "kind",
                "level",
                "message",
                "analysisTarget",
                "locations",
                "hostedViewerUri",
                "workItemUris",
                "stacks",
                "codeFlows",
                "graphs",
                "graphTraversals",
                "relatedLocations",
                "suppressions",
                "baselineState",
                "rank",
                "attachments",
                "fixes",
                "fingerprints",
                "partialFingerprints",
                "provenance",
                "taxa",
                "webRequest",
                "webResponse",
                "occurrenceCount",
                "properties",
            ],
        ),
        // `message` needs `text` or `id`; we always give `text`.
        "message" => (
            &["text"],
            &["text", "markdown", "id", "arguments", "properties"],
        ),
        "location" => (
            &[],
            &[
                "id",
                "physicalLocation",
                "logicalLocations",
                "message",
                "annotations",
                "relationships",
                "properties",
            ],
        ),
        "physical" => (
            &["artifactLocation"],
            &[
                "address",
                "artifactLocation",
                "region",
                "contextRegion",
                "properties",
            ],
        ),
        "artifact" => (
            &["uri"],
            &["uri", "uriBaseId", "index", "description", "properties"],
        ),
        "region" => (
            &["startLine"],
            &[
                "startLine",
                "startColumn",
                "endLine",
                "endColumn",
                "charOffset",
                "charLength",
                "byteOffset",
                "byteLength",
                "snippet",
                "message",
                "sourceLanguage",
                "properties",
            ],
        ),
        "invocation" => (
            &["executionSuccessful"],
            &[
                "commandLine",
                "arguments",
                "responseFiles",
                "startTimeUtc",
                "endTimeUtc",
                "exitCode",
                "ruleConfigurationOverrides",
                "notificationConfigurationOverrides",
                "toolExecutionNotifications",
                "toolConfigurationNotifications",
                "exitCodeDescription",
                "exitSignalName",
                "exitSignalNumber",
                "processStartFailureMessage",
                "executionSuccessful",
                "machine",
                "account",
                "processId",
                "executableLocation",
                "workingDirectory",
                "environmentVariables",
                "stdin",
                "stdout",
                "stderr",
                "stdoutStderr",
                "properties",
            ],
        ),
        "notification" => (
            &["message"],
            &[
                "locations",
                "message",
                "level",
                "threadId",
                "timeUtc",
                "exception",
                "descriptor",
                "associatedRule",
                "properties",
            ],
        ),
        "fix" => (
            &["artifactChanges"],
            &["description", "artifactChanges", "properties"],
        ),
        "artifactChange" => (
            &["artifactLocation", "replacements"],
            &["artifactLocation", "replacements", "properties"],
        ),
        "replacement" => (
            &["deletedRegion"],
            &["deletedRegion", "insertedContent", "properties"],
        ),
        "artifactContent" => (&[], &["text", "binary", "rendered", "properties"]),
        other => panic!("no such SARIF kind {other}"),
    }
}

fn check_object(v: &Value, kind: &str, path: &str) {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("{path}: not an object"));
    let (required, allowed) = sarif_kind(kind);
    for key in required {
        assert!(obj.contains_key(*key), "{path}: missing required `{key}`");
    }
    for key in obj.keys() {
        assert!(
            allowed.contains(&key.as_str()),
            "{path}: `{key}` is not a {kind} property"
        );
    }
}

fn check_level(v: &Value, path: &str) {
    let level = v
        .as_str()
        .unwrap_or_else(|| panic!("{path}: level is not a string"));
    assert!(
        ["none", "note", "warning", "error"].contains(&level),
        "{path}: level {level}"
    );
}

fn check_location(loc: &Value, path: &str) {
    check_object(loc, "location", path);
    if let Some(id) = loc.get("id") {
        assert!(id.as_i64().is_some_and(|i| i >= -1), "{path}.id");
    }
    if let Some(m) = loc.get("message") {
        check_object(m, "message", &format!("{path}.message"));
    }
    let phys = &loc["physicalLocation"];
    check_object(phys, "physical", &format!("{path}.physicalLocation"));
    let art = &phys["artifactLocation"];
    check_object(art, "artifact", &format!("{path}.artifactLocation"));
    let uri = art["uri"].as_str().expect("uri string");
    assert!(
        !uri.contains('\\') && !uri.contains(' '),
        "{path}: uri {uri}"
    );
    let region = &phys["region"];
    check_object(region, "region", &format!("{path}.region"));
    let n = |k: &str| {
        region[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{path}.region.{k}"))
    };
    for k in ["startLine", "startColumn", "endLine", "endColumn"] {
        assert!(n(k) >= 1, "{path}.region.{k} is 1-based");
    }
    assert!(
        (n("startLine"), n("startColumn")) <= (n("endLine"), n("endColumn")),
        "{path}: region is ordered"
    );
}

/// Checks a SARIF log against the structure the SARIF 2.1.0 schema requires.
fn check_sarif(log: &Value) {
    check_object(log, "log", "log");
    assert_eq!(
        log["$schema"],
        "https://json.schemastore.org/sarif-2.1.0.json"
    );
    assert_eq!(log["version"], "2.1.0");
    let runs = log["runs"].as_array().expect("runs array");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    check_object(run, "run", "run");
    if let Some(kind) = run.get("columnKind") {
        assert!(kind == "utf16CodeUnits" || kind == "unicodeCodePoints");
    }
    check_object(&run["tool"], "tool", "tool");
    let driver = &run["tool"]["driver"];
    check_object(driver, "driver", "driver");
    assert_eq!(driver["name"], "eflowc");
    assert!(
        driver["informationUri"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
    );
    let rules = driver["rules"].as_array().expect("rules");
    for (i, rule) in rules.iter().enumerate() {
        let p = format!("rules[{i}]");
        check_object(rule, "rule", &p);
        for k in ["shortDescription", "fullDescription", "help"] {
            check_object(&rule[k], "multiformat", &format!("{p}.{k}"));
            assert!(
                !rule[k]["text"].as_str().unwrap_or_default().is_empty(),
                "{p}.{k} empty"
            );
        }
        check_object(&rule["defaultConfiguration"], "configuration", &p);
        check_level(&rule["defaultConfiguration"]["level"], &p);
        assert!(Code::parse(rule["id"].as_str().expect("id")).is_some());
    }
    for (i, result) in run["results"]
        .as_array()
        .expect("results")
        .iter()
        .enumerate()
    {
        let p = format!("results[{i}]");
        check_object(result, "result", &p);
        check_object(&result["message"], "message", &format!("{p}.message"));
        check_level(&result["level"], &p);
        let index = result["ruleIndex"].as_u64().expect("ruleIndex") as usize;
        assert_eq!(
            rules[index]["id"], result["ruleId"],
            "{p}: ruleIndex points at its rule"
        );
        for (j, loc) in result["locations"]
            .as_array()
            .expect("locations")
            .iter()
            .enumerate()
        {
            check_location(loc, &format!("{p}.locations[{j}]"));
        }
        if let Some(related) = result.get("relatedLocations") {
            for (j, loc) in related.as_array().expect("array").iter().enumerate() {
                check_location(loc, &format!("{p}.relatedLocations[{j}]"));
            }
        }
        for (j, fix) in result
            .get("fixes")
            .map_or(&[][..], |f| f.as_array().expect("fixes array"))
            .iter()
            .enumerate()
        {
            let p = format!("{p}.fixes[{j}]");
            check_object(fix, "fix", &p);
            if let Some(d) = fix.get("description") {
                check_object(d, "message", &format!("{p}.description"));
            }
            for change in fix["artifactChanges"].as_array().expect("array") {
                check_object(change, "artifactChange", &p);
                check_object(&change["artifactLocation"], "artifact", &p);
                for r in change["replacements"].as_array().expect("array") {
                    check_object(r, "replacement", &p);
                    check_object(&r["deletedRegion"], "region", &p);
                    if let Some(c) = r.get("insertedContent") {
                        check_object(c, "artifactContent", &p);
                    }
                }
            }
        }
        let prints = result["partialFingerprints"]
            .as_object()
            .expect("fingerprints");
        assert!(prints.values().all(Value::is_string));
    }
    if let Some(invocations) = run.get("invocations") {
        for inv in invocations.as_array().expect("array") {
            check_object(inv, "invocation", "invocation");
            for n in inv["toolExecutionNotifications"]
                .as_array()
                .expect("notifications")
            {
                check_object(n, "notification", "notification");
                check_object(&n["message"], "message", "notification.message");
            }
        }
    }
}

fn sarif(diags: &[Diagnostic], f: &Fixture) -> Value {
    serde_json::from_str(&render_all(Format::Sarif, diags, f)).expect("SARIF is JSON")
}

#[test]
fn sarif_is_valid_and_complete() {
    let f = fixture();
    let log = sarif(&[mismatch(&f), awkward(&f), at_eof(&f)], &f);
    check_sarif(&log);
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["version"], "9.9.9-test");
    assert_eq!(run["columnKind"], "unicodeCodePoints");
    assert!(
        run.get("invocations").is_none(),
        "no notes when nothing was dropped"
    );

    let ids: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| r["id"].as_str().expect("id"))
        .collect();
    assert_eq!(ids, ["E0200", "E0401", "W0001"]);
    let rule = &run["tool"]["driver"]["rules"][0];
    assert_eq!(rule["name"], "TypeMismatch");
    assert_eq!(rule["shortDescription"]["text"], "type mismatch");
    assert_eq!(rule["defaultConfiguration"]["level"], "error");
    assert_eq!(rule["help"]["text"], explanation(Code::TypeMismatch).trim());
    assert_eq!(
        run["tool"]["driver"]["rules"][2]["defaultConfiguration"]["level"],
        "warning"
    );

    let r = &run["results"][0];
    assert_eq!(r["ruleId"], "E0200");
    assert_eq!(r["level"], "error");
    assert_eq!(
        r["message"]["text"],
        "expected Int, found Float\n\nhelp: write an integer such as `2`"
    );
    let loc = &r["locations"][0];
    assert_eq!(loc["message"]["text"], "this is a Float — «1.5»");
    let phys = &loc["physicalLocation"];
    assert_eq!(phys["artifactLocation"]["uri"], "flows/train.eflow");
    assert_eq!(phys["artifactLocation"]["uriBaseId"], "%SRCROOT%");
    assert_eq!(
        phys["region"],
        serde_json::json!({ "startLine": 4, "startColumn": 35, "endLine": 4, "endColumn": 38 })
    );
    let related = r["relatedLocations"].as_array().expect("related");
    assert_eq!(related.len(), 2);
    assert_eq!(
        related[0]["physicalLocation"]["artifactLocation"]["uri"],
        "flows/lib.eflow"
    );
    assert_eq!(
        related[0]["message"]["text"],
        "parameter `n` declared as Int here"
    );
    assert_eq!(related[1]["message"]["text"], "in this call");

    assert_eq!(
        run["results"][1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "odd%2C%20name%3A%20v2.eflow"
    );
    assert_eq!(run["results"][2]["level"], "warning");
    assert_eq!(run["results"][2]["ruleIndex"], 2);
}

#[test]
fn sarif_uris() {
    let mut sources = Sources::default();
    let names = [
        ("./flows/a.eflow", "flows/a.eflow", true),
        ("flows\\win.eflow", "flows/win.eflow", true),
        ("données/é t.eflow", "donn%C3%A9es/%C3%A9%20t.eflow", true),
        ("/abs/x.eflow", "file:///abs/x.eflow", false),
        ("C:\\work\\y.eflow", "file:///C:/work/y.eflow", false),
    ];
    let diags: Vec<Diagnostic> = names
        .iter()
        .map(|(name, _, _)| {
            let id = sources.add(SourceFile::new(*name, None, "x\n"));
            Diagnostic::new(Code::Syntax, id, Span::new(0, 1), "x")
        })
        .collect();
    let out = render(Format::Sarif, &diags, &sources, &opts());
    let log: Value = serde_json::from_str(&out).expect("JSON");
    check_sarif(&log);
    for (i, (_, uri, relative)) in names.iter().enumerate() {
        let art =
            &log["runs"][0]["results"][i]["locations"][0]["physicalLocation"]["artifactLocation"];
        assert_eq!(art["uri"], *uri);
        assert_eq!(art.get("uriBaseId").is_some(), *relative, "{uri}");
    }
}

#[test]
fn sarif_fingerprints_are_stable_and_distinct() {
    let f = fixture();
    let twice = [at_eof(&f), at_eof(&f), mismatch(&f)];
    let a = sarif(&twice, &f);
    let b = sarif(&twice, &f);
    let print = |log: &Value, i: usize| log["runs"][0]["results"][i]["partialFingerprints"].clone();
    assert_eq!(print(&a, 0), print(&b, 0));
    assert_ne!(print(&a, 0), print(&a, 1));
    assert_ne!(print(&a, 0), print(&a, 2));
    // Independent of the position: moving code must not lose the alert.
    let mut moved = at_eof(&f);
    moved.primary.span = Span::new(0, 4);
    assert_eq!(print(&sarif(&[moved], &f), 0), print(&a, 0));
}

#[test]
fn sarif_caps_results_and_keeps_errors() {
    let f = fixture();
    let mut diags: Vec<Diagnostic> = (0..MAX_SARIF_RESULTS + 1)
        .map(|i| {
            Diagnostic::new(
                Code::UnusedParam,
                f.lib,
                Span::new(i % 50, i % 50),
                format!("w{i}"),
            )
        })
        .collect();
    diags.push(Diagnostic::new(
        Code::Cycle,
        f.train,
        Span::new(0, 4),
        "late error",
    ));
    diags.push(Diagnostic::new(
        Code::Cycle,
        f.train,
        Span::new(5, 8),
        "another late error",
    ));
    let log = sarif(&diags, &f);
    let run = &log["runs"][0];
    let results = run["results"].as_array().expect("results");
    assert_eq!(results.len(), MAX_SARIF_RESULTS);
    assert_eq!(results.iter().filter(|r| r["level"] == "error").count(), 2);
    assert_eq!(
        results.last().expect("last")["message"]["text"],
        "another late error"
    );
    let note = &run["invocations"][0]["toolExecutionNotifications"][0];
    assert_eq!(note["level"], "warning");
    let text = note["message"]["text"].as_str().expect("text");
    assert!(
        text.starts_with("3 of 25003 results were dropped"),
        "{text}"
    );
    assert_eq!(run["invocations"][0]["executionSuccessful"], true);
    // Checking all 25,000 results is slow in debug builds; the structure of each is
    // the same, so the head and tail stand for the rest.
    let mut small = log.clone();
    let results = small["runs"][0]["results"].as_array_mut().expect("results");
    results.drain(5..results.len() - 5);
    check_sarif(&small);
}

#[test]
fn sarif_without_diagnostics_is_valid() {
    let f = fixture();
    let log = sarif(&[], &f);
    check_sarif(&log);
    assert_eq!(log["runs"][0]["results"], Value::Array(vec![]));
}

// --- Human --------------------------------------------------------------------------

#[test]
fn human_report() {
    let f = fixture();
    let out = render_all(Format::Human, &[mismatch(&f), awkward(&f), at_eof(&f)], &f);
    for fragment in [
        "E0200\n",
        "× expected Int, found Float",
        "╭─[flows/train.eflow:4:35]",
        "this is a Float — «1.5»",
        "in this call",
        "help: write an integer such as `2`",
        // The label in the other file gets its own snippet.
        "see also flows/lib.eflow",
        "╭─[flows/lib.eflow:2:31]",
        "remote step Fit(data: String, n: Int) -> Model",
        "parameter `n` declared as Int here",
        "E0401\n",
        "╭─[odd, name: v2.eflow:1:1]",
        "W0001\n",
        "⚠ output `m` is never used",
        "╭─[flows/train.eflow:6:2]",
    ] {
        assert!(out.contains(fragment), "missing {fragment:?} in:\n{out}");
    }
    assert!(out.ends_with("\nerror: 2 errors and 1 warning\n"), "{out}");
    assert!(!out.contains('\u{1b}'), "no ANSI escapes without colour");
    assert!(out.lines().all(|l| !l.ends_with(' ')), "no trailing blanks");
    // The secondary label in the same file stays in the primary snippet.
    let main = out.split("see also").next().expect("head");
    assert!(main.contains("in this call"));
}

#[test]
fn human_summary_and_colour() {
    let f = fixture();
    assert_eq!(render_all(Format::Human, &[], &f), "");
    let out = render_all(Format::Human, &[at_eof(&f), at_eof(&f)], &f);
    assert!(out.ends_with("\nwarning: 2 warnings\n"));
    let out = render_all(Format::Human, &[mismatch(&f)], &f);
    assert!(out.ends_with("\nerror: 1 error\n"));
    let colored = render(
        Format::Human,
        &[mismatch(&f)],
        &f.sources,
        &RenderOptions {
            color: true,
            ..opts()
        },
    );
    assert!(colored.contains("\u{1b}["));
}

#[test]
fn human_labels_in_unknown_files_keep_their_text_but_no_snippet() {
    let f = fixture();
    let d = Diagnostic::new(Code::Syntax, f.train, Span::new(0, 4), "x").with_secondary(
        FileId(9),
        Span::new(0, 1),
        "gone",
    );
    let out = render_all(Format::Human, &[d], &f);
    let tail = out
        .split("see also <unknown file>: gone")
        .nth(1)
        .unwrap_or_else(|| panic!("{out}"));
    assert!(!tail.contains("╭─["), "no snippet of another file:\n{out}");
}

// --- Everything ---------------------------------------------------------------------

#[test]
fn the_same_code_everywhere() {
    let f = fixture();
    let d = [Diagnostic::new(
        Code::InvalidConfig,
        f.lib,
        Span::new(0, 6),
        "bad config",
    )];
    assert!(render_all(Format::Human, &d, &f).contains("E0405"));
    let json: Value = serde_json::from_str(&render_all(Format::Json, &d, &f)).expect("JSON");
    assert_eq!(json["diagnostics"][0]["code"], "E0405");
    let log = sarif(&d, &f);
    assert_eq!(log["runs"][0]["results"][0]["ruleId"], "E0405");
    assert_eq!(log["runs"][0]["tool"]["driver"]["rules"][0]["id"], "E0405");
    assert!(render_all(Format::Github, &d, &f).contains(",title=E0405::bad config"));
}

#[test]
fn no_span_makes_any_format_panic() {
    let mut sources = Sources::default();
    let texts = [
        "",
        "\n",
        "é",
        "a\r\nb\té🚀\r\n",
        "flow F() {\n  let x = G(s: \"日本\")\n}",
    ];
    let ids: Vec<FileId> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| sources.add(SourceFile::new(format!("f{i}.eflow"), None, *t)))
        .collect();
    let mut diags = Vec::new();
    for (&id, text) in ids.iter().zip(texts) {
        let max = text.len() + 3;
        for start in 0..=max {
            for end in 0..=max {
                let other = ids[(id.0 as usize + 1) % ids.len()];
                diags.push(
                    Diagnostic::new(Code::Syntax, id, Span::new(start, end), "m")
                        .with_label("l")
                        .with_secondary(id, Span::new(end, start), "same file")
                        .with_secondary(other, Span::new(start, end), "other file")
                        .with_secondary(FileId(99), Span::new(start, end), "no file"),
                );
            }
        }
    }
    diags.push(Diagnostic::new(
        Code::Syntax,
        FileId(7),
        Span::new(3, 1),
        "unknown file",
    ));
    for format in Format::ALL {
        for d in &diags {
            let out = render(*format, std::slice::from_ref(d), &sources, &opts());
            assert!(!out.is_empty());
        }
    }
    check_sarif(
        &serde_json::from_str(&render(Format::Sarif, &diags, &sources, &opts())).expect("JSON"),
    );
}

// --- Explanations -------------------------------------------------------------------

#[test]
fn every_code_is_explained_with_an_example_and_its_fix() {
    for &code in Code::ALL {
        let text = explanation(code);
        assert!(!text.trim().is_empty(), "{code}");
        assert!(text.contains("Example"), "{code}: no example");
        // A change `eflowc diff` reports shows the old version and the changed one.
        let second = if code.is_change() { "Changed" } else { "Fixed" };
        assert!(text.contains(second), "{code}: no {second} version");
        let blocks = eflow_blocks(text);
        assert_eq!(blocks.len(), 2, "{code}: an example and a fixed version");
        assert_ne!(blocks[0], blocks[1], "{code}");
        assert!(!text.contains("```\n```"), "{code}");
    }
}

#[test]
fn fixed_examples_parse_cleanly() {
    for &code in Code::ALL {
        let blocks = eflow_blocks(explanation(code));
        let (_, errors) = eflow_compiler::syntax::parse(FileId(0), &blocks[1]);
        assert!(
            errors.is_empty(),
            "{code}: fixed example does not parse: {errors:?}"
        );
    }
}

#[test]
fn explain_output() {
    let text = render_explain(Code::TypeMismatch);
    assert!(
        text.starts_with("E0200: type mismatch\n\nA value has a different type"),
        "{text}"
    );
    assert!(text.ends_with("```\n"));
    for &code in Code::ALL {
        let text = render_explain(code);
        assert!(text.starts_with(&format!("{}: {}\n\n", code.as_str(), code.title())));
    }
}

#[test]
fn fixes_in_json_and_sarif() {
    let f = fixture();
    let d = mismatch(&f).with_fix(Fix::edit("Write `2`", f.train, at(TRAIN, "1.5"), "2"));
    let json: Value = serde_json::from_str(&render_all(Format::Json, std::slice::from_ref(&d), &f))
        .expect("JSON");
    let fix = &json["diagnostics"][0]["fixes"][0];
    assert_eq!(fix["title"], "Write `2`");
    assert_eq!(fix["preferred"], true);
    let edit = &fix["edits"][0];
    assert_eq!(edit["file"], "flows/train.eflow");
    assert_eq!(edit["text"], "2");
    assert_eq!(
        (&edit["span"]["start"], &edit["span"]["end"]),
        (&json!(92), &json!(95))
    );
    assert_eq!((&edit["line"], &edit["column"]), (&json!(4), &json!(35)));

    let log = sarif(&[d], &f);
    check_sarif(&log);
    let fix = &log["runs"][0]["results"][0]["fixes"][0];
    assert_eq!(fix["description"]["text"], "Write `2`");
    let change = &fix["artifactChanges"][0];
    assert_eq!(change["artifactLocation"]["uri"], "flows/train.eflow");
    let r = &change["replacements"][0];
    assert_eq!(r["insertedContent"]["text"], "2");
    assert_eq!(r["deletedRegion"]["startColumn"], 35);
    assert_eq!(r["deletedRegion"]["endColumn"], 38);
}
