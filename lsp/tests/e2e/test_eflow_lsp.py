"""End-to-end tests of eflow-lsp with pytest-lsp, a scripted LSP client.

Each test runs twice: with the client capabilities of Visual Studio Code (which
pulls diagnostics) and of Neovim 0.7 (which only takes pushed ones). The server
binary comes from EFLOW_LSP; the workspace is a copy of the repository's examples.
"""

import asyncio
import os
import pathlib
import shutil

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, client_capabilities

SERVER = os.environ["EFLOW_LSP"]
EXAMPLES = pathlib.Path(os.environ["EFLOW_EXAMPLES"])


@pytest_lsp.fixture(
    config=ClientServerConfig(server_command=[SERVER]),
    params=["visual-studio-code", "neovim@v0.7.0"],
)
async def client(request, lsp_client: LanguageClient, tmp_path):
    root = tmp_path / "ws"
    shutil.copytree(EXAMPLES, root)
    caps = client_capabilities(request.param)
    await lsp_client.initialize_session(
        types.InitializeParams(
            capabilities=caps,
            root_uri=root.as_uri(),
            workspace_folders=[types.WorkspaceFolder(uri=root.as_uri(), name="examples")],
            initialization_options={"diagnosticsDelayMs": 0},
        )
    )
    lsp_client.eflow_root = root
    lsp_client.eflow_pulls = caps.text_document is not None and caps.text_document.diagnostic is not None
    yield
    await lsp_client.shutdown_session()


def position(text: str, needle: str, delta: int = 0) -> types.Position:
    at = text.index(needle) + delta
    before = text[:at]
    line = before.count("\n")
    col = len(before[before.rfind("\n") + 1 :].encode("utf-16-le")) // 2
    return types.Position(line=line, character=col)


def open_doc(client: LanguageClient, name: str, text: str | None = None):
    path = client.eflow_root / name
    text = path.read_text() if text is None else text
    uri = path.as_uri()
    client.text_document_did_open(
        types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id="eflow", version=1, text=text)
        )
    )
    return uri, text


def change(client: LanguageClient, uri: str, version: int, text: str):
    client.text_document_did_change(
        types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)],
        )
    )


async def diagnostics(client: LanguageClient, uri: str, want=lambda diags: True):
    """The diagnostics of a document, pushed or pulled as the client does it, once
    they satisfy `want` (pushed ones arrive when the server has checked)."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        if client.eflow_pulls:
            report = await client.text_document_diagnostic_async(
                types.DocumentDiagnosticParams(text_document=types.TextDocumentIdentifier(uri=uri))
            )
            found = list(report.items)
        else:
            found = list(client.diagnostics.get(uri, [])) if uri in client.diagnostics else None
        if found is not None and want(found):
            return found
        assert asyncio.get_running_loop().time() < deadline, f"diagnostics of {uri}: {found}"
        await asyncio.sleep(0.02)


async def test_diagnostics_appear_and_clear(client: LanguageClient):
    uri, text = open_doc(client, "retraining.eflow")
    assert await diagnostics(client, uri) == []
    broken = text.replace("spec: spec)", "spec: specc)", 1)
    change(client, uri, 2, broken)
    found = await diagnostics(client, uri, lambda d: any(x.code == "E0100" for x in d))
    unknown = next(d for d in found if d.code == "E0100")
    assert "did you mean `spec`?" in unknown.message
    assert unknown.range.start == position(broken, "specc)")
    change(client, uri, 3, text)
    assert await diagnostics(client, uri, lambda d: d == []) == []


async def test_hover(client: LanguageClient):
    uri, text = open_doc(client, "retraining.eflow")
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(text, "let model", 5),
        )
    )
    assert "let model: Model" in hover.contents.value
    hover = await client.text_document_hover_async(
        types.HoverParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(text, "Train(features", 1),
        )
    )
    assert "remote step Train" in hover.contents.value
    assert "Trains" in hover.contents.value


async def test_completion(client: LanguageClient):
    uri, text = open_doc(client, "retraining.eflow")
    edited = text.replace("data: features.holdout", "data: features.", 1)
    change(client, uri, 2, edited)
    result = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(edited, "data: features.", len("data: features.")),
        )
    )
    items = result.items if isinstance(result, types.CompletionList) else result
    labels = {i.label for i in items}
    assert {"holdout", "train", "label", "columns"} <= labels, labels
    holdout = next(i for i in items if i.label == "holdout")
    assert holdout.detail == "Dataset"


async def test_definition_into_stdlib_and_references(client: LanguageClient):
    uri, text = open_doc(client, "retraining.eflow")
    loc = await client.text_document_definition_async(
        types.DefinitionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(text, "LatestSnapshot(tenant", 1),
        )
    )
    loc = loc[0] if isinstance(loc, list) else loc
    assert loc.uri.endswith("shared/catalog.eflow")
    loc = await client.text_document_definition_async(
        types.DefinitionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(text, "Evaluate(", 1),
        )
    )
    loc = loc[0] if isinstance(loc, list) else loc
    assert loc.uri.endswith("std/ml.eflow")
    refs = await client.text_document_references_async(
        types.ReferenceParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(text, "LatestSnapshot(tenant", 1),
            context=types.ReferenceContext(include_declaration=True),
        )
    )
    files = {pathlib.Path(r.uri).name for r in refs}
    assert {"retraining.eflow", "catalog.eflow", "agent.eflow"} <= files, files


async def test_rename_across_files(client: LanguageClient):
    uri, text = open_doc(client, "retraining.eflow")
    edit = await client.text_document_rename_async(
        types.RenameParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(text, "flow Retrain", 6),
            new_name="RetrainTenant",
        )
    )
    files = {pathlib.Path(u).name for u in edit.changes}
    assert {"retraining.eflow", "agent.eflow"} <= files, files


async def test_symbols(client: LanguageClient):
    uri, _ = open_doc(client, "retraining.eflow")
    syms = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    names = {s.name for s in syms}
    assert {"Retrain", "dev", "prod"} <= names, names
    found = await client.workspace_symbol_async(types.WorkspaceSymbolParams(query="Segment"))
    assert any(s.name == "TrainSegment" for s in found)


async def test_formatting_semantic_tokens_signature_inlay(client: LanguageClient):
    uri, text = open_doc(client, "retraining.eflow")
    edits = await client.text_document_formatting_async(
        types.DocumentFormattingParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            options=types.FormattingOptions(tab_size=4, insert_spaces=True),
        )
    )
    assert edits is not None
    tokens = await client.text_document_semantic_tokens_full_async(
        types.SemanticTokensParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    assert len(tokens.data) > 0 and len(tokens.data) % 5 == 0
    edited = text.replace("Train(features: features, spec: spec)", "Train(features: features, ", 1)
    change(client, uri, 2, edited)
    help = await client.text_document_signature_help_async(
        types.SignatureHelpParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(edited, "Train(features: features, ", len("Train(features: features, ")),
        )
    )
    assert help.signatures[0].label.startswith("Train(features: Features, spec: TrainingSpec)")
    assert help.active_parameter == 1
    change(client, uri, 3, text)
    hints = await client.text_document_inlay_hint_async(
        types.InlayHintParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=types.Position(line=0, character=0), end=types.Position(line=400, character=0)),
        )
    )
    labels = [h.label for h in hints]
    assert ": Model" in labels and ": Evaluation" in labels, labels


async def test_quick_fix(client: LanguageClient):
    uri, text = open_doc(client, "retraining.eflow")
    broken = text.replace("model: model,\n        data:", "model: modle,\n        data:", 1)
    change(client, uri, 2, broken)
    at = position(broken, "modle")
    actions = await client.text_document_code_action_async(
        types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            range=types.Range(start=at, end=at),
            context=types.CodeActionContext(diagnostics=[]),
        )
    )
    titles = [a.title for a in actions]
    assert "Change `modle` to `model`" in titles, titles


async def test_broken_document(client: LanguageClient):
    uri, text = open_doc(client, "retraining.eflow")
    broken = text.replace("    return version", "    let x = Evaluate(model: model, data: features.\n    return version", 1)
    change(client, uri, 2, broken)
    result = await client.text_document_completion_async(
        types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri),
            position=position(broken, "data: features.\n", len("data: features.")),
        )
    )
    items = result.items if isinstance(result, types.CompletionList) else result
    assert "holdout" in {i.label for i in items}
    syms = await client.text_document_document_symbol_async(
        types.DocumentSymbolParams(text_document=types.TextDocumentIdentifier(uri=uri))
    )
    assert "Retrain" in {s.name for s in syms}
    await diagnostics(client, uri, lambda d: any(x.code == "E0001" for x in d))
