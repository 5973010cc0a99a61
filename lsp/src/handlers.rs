//! Request handlers: protocol in, [`crate::ide`] queries, protocol out.

use std::collections::HashMap;

use eflow_compiler::analysis::FileId;
use eflow_compiler::syntax::ast::Span;
use lsp_server::{ErrorCode, Request, ResponseError};
use lsp_types::request::{self as req, Request as _};
use lsp_types::*;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::convert::{self, LineIndex};
use crate::ide::{actions, completion, hover, inlay, semantic, signature, symbols};
use crate::server::{ClientCaps, Config, Server, error};
use eflow_compiler::semantics::{Def, Resolution};

type Answer = Result<Value, ResponseError>;

pub fn initialize_result(caps: &ClientCaps, config: &Config) -> InitializeResult {
    let _ = config;
    InitializeResult {
        capabilities: ServerCapabilities {
            position_encoding: Some(PositionEncodingKind::UTF16),
            text_document_sync: Some(TextDocumentSyncCapability::Options(
                TextDocumentSyncOptions {
                    open_close: Some(true),
                    change: Some(TextDocumentSyncKind::INCREMENTAL),
                    save: Some(TextDocumentSyncSaveOptions::Supported(true)),
                    ..Default::default()
                },
            )),
            hover_provider: Some(HoverProviderCapability::Simple(true)),
            completion_provider: Some(CompletionOptions {
                trigger_characters: Some(
                    [".", "(", ",", ":", "\"", "/", "="]
                        .map(String::from)
                        .to_vec(),
                ),
                ..Default::default()
            }),
            signature_help_provider: Some(SignatureHelpOptions {
                trigger_characters: Some(vec!["(".into(), ",".into()]),
                retrigger_characters: Some(vec![":".into()]),
                ..Default::default()
            }),
            definition_provider: Some(OneOf::Left(true)),
            references_provider: Some(OneOf::Left(true)),
            document_highlight_provider: Some(OneOf::Left(true)),
            document_symbol_provider: Some(OneOf::Left(true)),
            workspace_symbol_provider: Some(OneOf::Left(true)),
            code_action_provider: Some(CodeActionProviderCapability::Options(CodeActionOptions {
                code_action_kinds: Some(vec![CodeActionKind::QUICKFIX]),
                ..Default::default()
            })),
            document_formatting_provider: Some(OneOf::Left(true)),
            rename_provider: Some(OneOf::Right(RenameOptions {
                prepare_provider: Some(true),
                work_done_progress_options: Default::default(),
            })),
            semantic_tokens_provider: Some(
                SemanticTokensServerCapabilities::SemanticTokensOptions(SemanticTokensOptions {
                    legend: SemanticTokensLegend {
                        token_types: semantic::TYPES
                            .iter()
                            .map(|t| SemanticTokenType::new(t))
                            .collect(),
                        token_modifiers: semantic::MODIFIERS
                            .iter()
                            .map(|m| SemanticTokenModifier::new(m))
                            .collect(),
                    },
                    full: Some(SemanticTokensFullOptions::Bool(true)),
                    range: Some(true),
                    ..Default::default()
                }),
            ),
            inlay_hint_provider: Some(OneOf::Left(true)),
            diagnostic_provider: caps.pull_diagnostics.then(|| {
                DiagnosticServerCapabilities::Options(DiagnosticOptions {
                    identifier: Some("eflow".into()),
                    inter_file_dependencies: true,
                    workspace_diagnostics: false,
                    work_done_progress_options: Default::default(),
                })
            }),
            ..Default::default()
        },
        server_info: Some(ServerInfo {
            name: "eflow-lsp".into(),
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
    }
}

pub fn watch_registration() -> RegistrationParams {
    let options = DidChangeWatchedFilesRegistrationOptions {
        watchers: vec![FileSystemWatcher {
            glob_pattern: GlobPattern::String("**/*.eflow".into()),
            kind: None,
        }],
    };
    RegistrationParams {
        registrations: vec![Registration {
            id: "eflow-watch".into(),
            method: "workspace/didChangeWatchedFiles".into(),
            register_options: serde_json::to_value(options).ok(),
        }],
    }
}

fn parse<T: DeserializeOwned>(v: Value) -> Result<T, ResponseError> {
    serde_json::from_value(v)
        .map_err(|e| error(ErrorCode::InvalidParams, format!("invalid parameters: {e}")))
}

fn json<T: serde::Serialize>(v: T) -> Answer {
    serde_json::to_value(v).map_err(|e| error(ErrorCode::InternalError, e.to_string()))
}

pub fn dispatch(s: &mut Server, r: Request) -> Answer {
    let p = r.params;
    match r.method.as_str() {
        req::HoverRequest::METHOD => json(on_hover(s, parse(p)?)),
        req::Completion::METHOD => json(on_completion(s, parse(p)?)),
        req::GotoDefinition::METHOD => json(on_definition(s, parse(p)?)),
        req::References::METHOD => json(on_references(s, parse(p)?)),
        req::DocumentHighlightRequest::METHOD => json(on_highlight(s, parse(p)?)),
        req::PrepareRenameRequest::METHOD => json(on_prepare_rename(s, parse(p)?)?),
        req::Rename::METHOD => json(on_rename(s, parse(p)?)?),
        req::DocumentSymbolRequest::METHOD => json(on_document_symbols(s, parse(p)?)),
        req::WorkspaceSymbolRequest::METHOD => json(on_workspace_symbols(s, parse(p)?)),
        req::Formatting::METHOD => json(on_formatting(s, parse(p)?)),
        req::SemanticTokensFullRequest::METHOD => json(on_semantic_tokens(
            s,
            parse::<SemanticTokensParams>(p)?.text_document.uri,
            None,
        )),
        req::SemanticTokensRangeRequest::METHOD => {
            let p: SemanticTokensRangeParams = parse(p)?;
            json(on_semantic_tokens(s, p.text_document.uri, Some(p.range)))
        }
        req::SignatureHelpRequest::METHOD => json(on_signature_help(s, parse(p)?)),
        req::InlayHintRequest::METHOD => json(on_inlay_hints(s, parse(p)?)),
        req::CodeActionRequest::METHOD => json(on_code_action(s, parse(p)?)),
        req::DocumentDiagnosticRequest::METHOD => json(on_pull_diagnostics(s, parse(p)?)),
        "eflow/debugPanic" if std::env::var_os("EFLOW_LSP_DEBUG_PANIC").is_some() => {
            panic!("deliberate panic for testing")
        }
        _ => Err(error(
            ErrorCode::MethodNotFound,
            format!("unknown method `{}`", r.method),
        )),
    }
}

/// The analysed file and byte offset of a position, after bringing the analysis
/// up to date.
fn locate(s: &mut Server, uri: &Url, pos: Position) -> Option<(FileId, usize)> {
    s.ws.refresh();
    let file = s.ws.file_of(uri)?;
    let offset = LineIndex::new(s.ws.db().text(file)).offset(pos);
    Some((file, offset))
}

fn range_in(s: &Server, file: FileId, span: Span) -> Range {
    LineIndex::new(s.ws.db().text(file)).range(span)
}

fn location(s: &Server, file: FileId, span: Span) -> Option<Location> {
    Some(Location::new(s.ws.url_of(file)?, range_in(s, file, span)))
}

fn markup(s: &Server, markdown: String) -> MarkupContent {
    if s.caps.markdown {
        MarkupContent {
            kind: MarkupKind::Markdown,
            value: markdown,
        }
    } else {
        MarkupContent {
            kind: MarkupKind::PlainText,
            value: markdown
                .replace("```eflow\n", "")
                .replace("\n```", "")
                .replace('`', ""),
        }
    }
}

fn on_hover(s: &mut Server, p: HoverParams) -> Option<Hover> {
    let pp = p.text_document_position_params;
    let (file, offset) = locate(s, &pp.text_document.uri, pp.position)?;
    let h = hover::hover(s.ws.db(), file, offset)?;
    Some(Hover {
        contents: HoverContents::Markup(markup(s, h.markdown)),
        range: Some(range_in(s, file, h.span)),
    })
}

fn on_completion(s: &mut Server, p: CompletionParams) -> Option<CompletionResponse> {
    let uri = p.text_document_position.text_document.uri;
    // Completion reads the buffer as it is now and the last analysis: re-checking
    // a large file on every keystroke would make it lag behind the typing. A file
    // the analysis has not seen yet is analysed first.
    if s.ws.file_of(&uri).is_none() {
        s.ws.refresh();
    }
    let file = s.ws.file_of(&uri)?;
    let text = s.ws.current_text(&uri)?.to_string();
    let index = LineIndex::new(&text);
    let offset = index.offset(p.text_document_position.position);
    let analysed = s.ws.db().text(file);
    // Edits positioned in the analysed text are valid in the buffer only before
    // the first difference between the two.
    let same_prefix = analysed
        .bytes()
        .zip(text.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let mut items = completion::complete(&completion::Request {
        db: s.ws.db(),
        memory: &s.ws.memory,
        file,
        text: &text,
        offset,
        snippets: s.caps.snippets,
    });
    if items
        .iter()
        .any(|c| c.edits.iter().any(|(sp, _)| sp.end as usize > same_prefix))
    {
        s.ws.refresh();
        items = completion::complete(&completion::Request {
            db: s.ws.db(),
            memory: &s.ws.memory,
            file,
            text: &text,
            offset,
            snippets: s.caps.snippets,
        });
    }
    let word_start = text[..offset]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .map_or(0, |i| i + 1);
    let word = Span::new(word_start, offset);
    let list: Vec<CompletionItem> = items
        .into_iter()
        .map(|c| {
            let kind = match c.kind {
                completion::Kind::Keyword => CompletionItemKind::KEYWORD,
                completion::Kind::Snippet => CompletionItemKind::SNIPPET,
                completion::Kind::Step => CompletionItemKind::FUNCTION,
                completion::Kind::Flow => CompletionItemKind::METHOD,
                completion::Kind::Record => CompletionItemKind::STRUCT,
                completion::Kind::Enum => CompletionItemKind::ENUM,
                completion::Kind::Alias | completion::Kind::Builtin => CompletionItemKind::CLASS,
                completion::Kind::Variant | completion::Kind::ErrorName => {
                    CompletionItemKind::ENUM_MEMBER
                }
                completion::Kind::Field | completion::Kind::Key => CompletionItemKind::FIELD,
                completion::Kind::Param => CompletionItemKind::VARIABLE,
                completion::Kind::Local | completion::Kind::Value => CompletionItemKind::VARIABLE,
                completion::Kind::Connector => CompletionItemKind::MODULE,
                completion::Kind::Module => CompletionItemKind::MODULE,
                completion::Kind::TypeParam => CompletionItemKind::TYPE_PARAMETER,
            };
            let insert = c.insert.clone().unwrap_or_else(|| c.label.clone());
            let text_edit = c
                .replace
                .map(|sp| CompletionTextEdit::Edit(TextEdit::new(index.range(sp), insert.clone())));
            let text_edit = text_edit.or_else(|| {
                // Labels like `Stage.Production` or `Record { … }` contain
                // characters that end a word: replace the word typed so far.
                Some(CompletionTextEdit::Edit(TextEdit::new(
                    index.range(word),
                    insert.clone(),
                )))
            });
            let edits: Vec<TextEdit> = c
                .edits
                .iter()
                .map(|(sp, t)| {
                    TextEdit::new(LineIndex::new(s.ws.db().text(file)).range(*sp), t.clone())
                })
                .collect();
            CompletionItem {
                label: c.label.clone(),
                kind: Some(kind),
                detail: c.detail.clone(),
                documentation: c
                    .doc
                    .clone()
                    .map(|d| Documentation::MarkupContent(markup(s, d))),
                sort_text: Some(format!("{}{}", c.rank, c.label)),
                filter_text: Some(
                    c.label
                        .split([' ', '('])
                        .next()
                        .unwrap_or(&c.label)
                        .to_string(),
                ),
                insert_text_format: Some(if c.snippet {
                    InsertTextFormat::SNIPPET
                } else {
                    InsertTextFormat::PLAIN_TEXT
                }),
                text_edit,
                additional_text_edits: (!edits.is_empty()).then_some(edits),
                ..Default::default()
            }
        })
        .collect();
    Some(CompletionResponse::List(CompletionList {
        is_incomplete: false,
        items: list,
    }))
}

fn occurrence_at(s: &mut Server, uri: &Url, pos: Position) -> Option<(FileId, Resolution)> {
    let (file, offset) = locate(s, uri, pos)?;
    let occ =
        s.ws.analysis
            .semantics()
            .definition_at(file, offset)?
            .clone();
    Some((file, occ))
}

fn on_definition(s: &mut Server, p: GotoDefinitionParams) -> Option<GotoDefinitionResponse> {
    let pp = p.text_document_position_params;
    let (_, occ) = occurrence_at(s, &pp.text_document.uri, pp.position)?;
    if let Def::Module(target) = occ.def {
        return Some(GotoDefinitionResponse::Scalar(location(
            s,
            target,
            Span::default(),
        )?));
    }
    let decls: Vec<Location> =
        s.ws.analysis
            .semantics()
            .references_to(&occ.def)
            .into_iter()
            .filter(|(_, o)| o.decl)
            .filter_map(|(f, o)| location(s, f, o.span))
            .collect();
    match decls.len() {
        0 => None,
        1 => decls.into_iter().next().map(GotoDefinitionResponse::Scalar),
        _ => Some(GotoDefinitionResponse::Array(decls)),
    }
}

fn on_references(s: &mut Server, p: ReferenceParams) -> Option<Vec<Location>> {
    let pp = p.text_document_position;
    let (_, occ) = occurrence_at(s, &pp.text_document.uri, pp.position)?;
    let include_decl = p.context.include_declaration;
    Some(
        s.ws.analysis
            .semantics()
            .references_to(&occ.def)
            .into_iter()
            .filter(|(_, o)| include_decl || !o.decl)
            .filter_map(|(f, o)| location(s, f, o.span))
            .collect(),
    )
}

fn on_highlight(s: &mut Server, p: DocumentHighlightParams) -> Option<Vec<DocumentHighlight>> {
    let pp = p.text_document_position_params;
    let (file, occ) = occurrence_at(s, &pp.text_document.uri, pp.position)?;
    Some(
        s.ws.analysis
            .semantics()
            .resolutions(file)
            .iter()
            .filter(|o| o.def == occ.def)
            .map(|o| DocumentHighlight {
                range: range_in(s, file, o.span),
                kind: Some(if o.decl {
                    DocumentHighlightKind::WRITE
                } else {
                    DocumentHighlightKind::READ
                }),
            })
            .collect(),
    )
}

/// What a rename at a position would change, or why it cannot.
fn rename_target(
    s: &mut Server,
    uri: &Url,
    pos: Position,
) -> Result<(FileId, Resolution), ResponseError> {
    let (file, occ) = occurrence_at(s, uri, pos)
        .ok_or_else(|| error(ErrorCode::RequestFailed, "there is nothing to rename here"))?;
    if !occ.def.renamable() {
        return Err(error(
            ErrorCode::RequestFailed,
            "built-in names cannot be renamed",
        ));
    }
    let in_std =
        s.ws.analysis
            .semantics()
            .references_to(&occ.def)
            .iter()
            .any(|(f, o)| o.decl && s.ws.db().module(*f).is_some_and(|m| m.is_std));
    if in_std {
        return Err(error(
            ErrorCode::RequestFailed,
            "names of the standard library cannot be renamed",
        ));
    }
    Ok((file, occ))
}

fn on_prepare_rename(
    s: &mut Server,
    p: TextDocumentPositionParams,
) -> Result<Option<PrepareRenameResponse>, ResponseError> {
    let (file, occ) = rename_target(s, &p.text_document.uri, p.position)?;
    Ok(Some(PrepareRenameResponse::Range(range_in(
        s, file, occ.span,
    ))))
}

fn on_rename(s: &mut Server, p: RenameParams) -> Result<Option<WorkspaceEdit>, ResponseError> {
    let pp = p.text_document_position;
    let new = p.new_name.trim();
    let valid = new
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && new.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !eflow_compiler::syntax::is_reserved(new);
    if !valid {
        return Err(error(
            ErrorCode::InvalidParams,
            format!("`{new}` is not a valid name"),
        ));
    }
    let (file, occ) = rename_target(s, &pp.text_document.uri, pp.position)?;
    let db = s.ws.db();
    let old = db
        .text(file)
        .get(occ.span.start as usize..occ.span.end as usize)
        .unwrap_or("")
        .to_string();
    let declared: Option<String> =
        s.ws.analysis
            .semantics()
            .references_to(&occ.def)
            .iter()
            .find(|(_, o)| o.decl)
            .and_then(|(f, o)| {
                db.text(*f)
                    .get(o.span.start as usize..o.span.end as usize)
                    .map(str::to_string)
            });
    // A name imported under another name (`as`) is renamed in its file only.
    let only_here = declared.is_some_and(|d| d != old);
    let mut changes: HashMap<Url, Vec<TextEdit>> = HashMap::new();
    for (f, o) in s.ws.analysis.semantics().references_to(&occ.def) {
        if only_here && f != file {
            continue;
        }
        let written = db
            .text(f)
            .get(o.span.start as usize..o.span.end as usize)
            .unwrap_or("");
        if written != old {
            continue;
        }
        let Some(url) = s.ws.url_of(f) else {
            continue;
        };
        changes
            .entry(url)
            .or_default()
            .push(TextEdit::new(range_in(s, f, o.span), new.to_string()));
    }
    Ok(Some(WorkspaceEdit {
        changes: Some(changes),
        ..Default::default()
    }))
}

fn symbol_kind(k: symbols::SymbolKind) -> SymbolKind {
    match k {
        symbols::SymbolKind::Module => SymbolKind::MODULE,
        symbols::SymbolKind::Record => SymbolKind::STRUCT,
        symbols::SymbolKind::Enum => SymbolKind::ENUM,
        symbols::SymbolKind::Alias => SymbolKind::TYPE_PARAMETER,
        symbols::SymbolKind::Step => SymbolKind::FUNCTION,
        symbols::SymbolKind::Flow => SymbolKind::METHOD,
        symbols::SymbolKind::Field => SymbolKind::FIELD,
        symbols::SymbolKind::Variant => SymbolKind::ENUM_MEMBER,
        symbols::SymbolKind::Param => SymbolKind::VARIABLE,
        symbols::SymbolKind::Local => SymbolKind::VARIABLE,
        symbols::SymbolKind::Bindings => SymbolKind::NAMESPACE,
        symbols::SymbolKind::Binding => SymbolKind::PROPERTY,
    }
}

#[allow(deprecated)]
fn on_document_symbols(s: &mut Server, p: DocumentSymbolParams) -> Option<DocumentSymbolResponse> {
    s.ws.refresh();
    let file = s.ws.file_of(&p.text_document.uri)?;
    let module = s.ws.db().module(file)?;
    let syms = symbols::document_symbols(s.ws.db(), module);
    let index = LineIndex::new(s.ws.db().text(file));
    if s.caps.hierarchical_symbols {
        fn convert(index: &LineIndex, sym: symbols::Symbol) -> DocumentSymbol {
            DocumentSymbol {
                name: sym.name,
                detail: sym.detail,
                kind: symbol_kind(sym.kind),
                tags: None,
                deprecated: None,
                range: index.range(sym.span),
                selection_range: index.range(sym.name_span),
                children: Some(
                    sym.children
                        .into_iter()
                        .map(|c| convert(index, c))
                        .collect(),
                ),
            }
        }
        return Some(DocumentSymbolResponse::Nested(
            syms.into_iter().map(|s| convert(&index, s)).collect(),
        ));
    }
    let url = s.ws.url_of(file)?;
    let mut flat = Vec::new();
    fn flatten(
        index: &LineIndex,
        url: &Url,
        sym: symbols::Symbol,
        container: Option<String>,
        out: &mut Vec<SymbolInformation>,
    ) {
        out.push(SymbolInformation {
            name: sym.name.clone(),
            kind: symbol_kind(sym.kind),
            tags: None,
            deprecated: None,
            location: Location::new(url.clone(), index.range(sym.span)),
            container_name: container,
        });
        for c in sym.children {
            flatten(index, url, c, Some(sym.name.clone()), out);
        }
    }
    for sym in syms {
        flatten(&index, &url, sym, None, &mut flat);
    }
    Some(DocumentSymbolResponse::Flat(flat))
}

#[allow(deprecated)]
fn on_workspace_symbols(
    s: &mut Server,
    p: WorkspaceSymbolParams,
) -> Option<Vec<SymbolInformation>> {
    s.ws.refresh();
    let found = symbols::workspace_symbols(s.ws.db(), &p.query);
    Some(
        found
            .into_iter()
            .filter_map(|(file, sym, module)| {
                Some(SymbolInformation {
                    name: sym.name,
                    kind: symbol_kind(sym.kind),
                    tags: None,
                    deprecated: None,
                    location: location(s, file, sym.name_span)?,
                    container_name: Some(module),
                })
            })
            .collect(),
    )
}

fn on_formatting(s: &mut Server, p: DocumentFormattingParams) -> Option<Vec<TextEdit>> {
    let text = s.ws.current_text(&p.text_document.uri)?.to_string();
    match eflow_compiler::fmt::format_source(&text) {
        Ok(formatted) if formatted == text => Some(Vec::new()),
        Ok(formatted) => {
            let index = LineIndex::new(&text);
            Some(vec![TextEdit::new(
                index.range(Span::new(0, text.len())),
                formatted,
            )])
        }
        Err(_) => {
            s.log("not formatted: the file has syntax errors".into());
            None
        }
    }
}

fn on_semantic_tokens(
    s: &mut Server,
    uri: Url,
    range: Option<Range>,
) -> Option<SemanticTokensResult> {
    s.ws.refresh();
    let file = s.ws.file_of(&uri)?;
    let text = s.ws.db().text(file);
    let index = LineIndex::new(text);
    let only = range.map(|r| index.span(r));
    let toks = semantic::tokens(s.ws.db(), text, s.ws.analysis.semantics().resolutions(file));
    let mut data = Vec::new();
    let (mut line, mut col) = (0u32, 0u32);
    for (span, ty, mods) in toks {
        if only.is_some_and(|o| span.end < o.start || span.start > o.end) {
            continue;
        }
        let start = index.position(span.start as usize);
        let end = index.position(span.end as usize);
        if end.line != start.line {
            continue;
        }
        let delta_line = start.line - line;
        let delta_start = if delta_line == 0 {
            start.character - col
        } else {
            start.character
        };
        data.push(SemanticToken {
            delta_line,
            delta_start,
            length: end.character - start.character,
            token_type: ty,
            token_modifiers_bitset: mods,
        });
        line = start.line;
        col = start.character;
    }
    Some(SemanticTokensResult::Tokens(SemanticTokens {
        result_id: None,
        data,
    }))
}

fn on_signature_help(s: &mut Server, p: SignatureHelpParams) -> Option<SignatureHelp> {
    let pp = p.text_document_position_params;
    if s.ws.file_of(&pp.text_document.uri).is_none() {
        s.ws.refresh();
    }
    let file = s.ws.file_of(&pp.text_document.uri)?;
    let text = s.ws.current_text(&pp.text_document.uri)?.to_string();
    let offset = LineIndex::new(&text).offset(pp.position);
    let h = signature::signature_help(s.ws.db(), file, &text, offset)?;
    let params: Vec<ParameterInformation> = h
        .params
        .iter()
        .map(|(label, doc)| ParameterInformation {
            label: ParameterLabel::Simple(label.clone()),
            documentation: (!doc.is_empty())
                .then(|| Documentation::MarkupContent(markup(s, doc.clone()))),
        })
        .collect();
    Some(SignatureHelp {
        signatures: vec![SignatureInformation {
            label: h.label,
            documentation: h.doc.map(|d| Documentation::MarkupContent(markup(s, d))),
            parameters: Some(params),
            active_parameter: h.active.map(|a| a as u32),
        }],
        active_signature: Some(0),
        active_parameter: h.active.map(|a| a as u32),
    })
}

fn on_inlay_hints(s: &mut Server, p: InlayHintParams) -> Option<Vec<InlayHint>> {
    s.ws.refresh();
    let file = s.ws.file_of(&p.text_document.uri)?;
    let index = LineIndex::new(s.ws.db().text(file));
    let module = s.ws.db().module(file)?;
    let hints = inlay::inlay_hints(s.ws.db(), module, index.span(p.range));
    Some(
        hints
            .into_iter()
            .map(|h| InlayHint {
                position: index.position(h.offset),
                label: InlayHintLabel::String(h.label),
                kind: Some(InlayHintKind::TYPE),
                text_edits: None,
                tooltip: None,
                padding_left: None,
                padding_right: None,
                data: None,
            })
            .collect(),
    )
}

fn on_code_action(s: &mut Server, p: CodeActionParams) -> Option<CodeActionResponse> {
    s.ws.refresh();
    let file = s.ws.file_of(&p.text_document.uri)?;
    let text = s.ws.db().text(file);
    let index = LineIndex::new(text);
    let span = index.span(p.range);
    let found = actions::code_actions(s.ws.db(), file, span);
    let mut out = Vec::new();
    for a in found {
        let mut changes: HashMap<Url, Vec<TextEdit>> = HashMap::new();
        for (f, sp, t) in &a.edits {
            if let Some(url) = s.ws.url_of(*f) {
                changes
                    .entry(url)
                    .or_default()
                    .push(TextEdit::new(range_in(s, *f, *sp), t.clone()));
            }
        }
        out.push(CodeActionOrCommand::CodeAction(CodeAction {
            title: a.title,
            kind: Some(CodeActionKind::QUICKFIX),
            diagnostics: Some(vec![convert::diagnostic(&s.ws, &index, &a.fixes)]),
            edit: Some(WorkspaceEdit {
                changes: Some(changes),
                ..Default::default()
            }),
            command: None,
            is_preferred: Some(a.preferred),
            disabled: None,
            data: None,
        }));
    }
    Some(out)
}

fn on_pull_diagnostics(
    s: &mut Server,
    p: DocumentDiagnosticParams,
) -> DocumentDiagnosticReportResult {
    s.ws.refresh();
    let items = s
        .diagnostics_by_file()
        .remove(&p.text_document.uri)
        .or_else(|| {
            // The client may spell the URI differently from the analysis.
            let file = s.ws.file_of(&p.text_document.uri)?;
            let url = s.ws.url_of(file)?;
            s.diagnostics_by_file().remove(&url)
        })
        .unwrap_or_default();
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&items)
        .unwrap_or_default()
        .hash(&mut h);
    let id = format!("{:016x}", h.finish());
    if p.previous_result_id.as_deref() == Some(id.as_str()) {
        return DocumentDiagnosticReportResult::Report(DocumentDiagnosticReport::Unchanged(
            RelatedUnchangedDocumentDiagnosticReport {
                related_documents: None,
                unchanged_document_diagnostic_report: UnchangedDocumentDiagnosticReport {
                    result_id: id,
                },
            },
        ));
    }
    DocumentDiagnosticReportResult::Report(DocumentDiagnosticReport::Full(
        RelatedFullDocumentDiagnosticReport {
            related_documents: None,
            full_document_diagnostic_report: FullDocumentDiagnosticReport {
                result_id: Some(id),
                items,
            },
        },
    ))
}
