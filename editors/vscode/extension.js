// The eflow extension: starts eflow-lsp for `.eflow` files. Highlighting comes
// from the TextMate grammar at once and from the server's semantic tokens when
// it is up; everything else (diagnostics, hover, completion, …) from the server.
"use strict";

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function start(context) {
  const config = vscode.workspace.getConfiguration("eflow");
  const command = config.get("server.path") || "eflow-lsp";
  const serverOptions = { run: { command }, debug: { command } };
  const clientOptions = {
    documentSelector: [{ language: "eflow" }],
    initializationOptions: { diagnosticsDelayMs: config.get("diagnostics.delayMs") },
    synchronize: {
      fileEvents: vscode.workspace.createFileSystemWatcher("**/*.eflow"),
    },
  };
  client = new LanguageClient("eflow", "eflow", serverOptions, clientOptions);
  return client.start().catch((err) => {
    vscode.window.showErrorMessage(
      `eflow: could not start ${command} (${err.message}). Set "eflow.server.path" to the eflow-lsp binary.`,
    );
  });
}

function activate(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand("eflow.restartServer", async () => {
      if (client) {
        await client.stop();
      }
      await start(context);
    }),
  );
  return start(context);
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
