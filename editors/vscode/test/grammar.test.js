// Checks that the extension's static files are valid: the grammar and the
// language configuration parse, every grammar regex compiles, and the keywords
// match the language's reserved words. Run with `npm test` (no VS Code needed).
"use strict";

const assert = require("assert");
const fs = require("fs");
const path = require("path");

const root = path.join(__dirname, "..");
const grammar = JSON.parse(fs.readFileSync(path.join(root, "syntaxes/eflow.tmLanguage.json"), "utf8"));
JSON.parse(fs.readFileSync(path.join(root, "language-configuration.json"), "utf8"));
const pkg = JSON.parse(fs.readFileSync(path.join(root, "package.json"), "utf8"));
assert.strictEqual(pkg.contributes.grammars[0].scopeName, grammar.scopeName);

let regexes = 0;
(function walk(node) {
  if (Array.isArray(node)) return node.forEach(walk);
  if (node && typeof node === "object") {
    for (const key of ["match", "begin", "end"]) {
      if (typeof node[key] === "string") {
        new RegExp(node[key].replace(/\(\?!/g, "(?!"));
        regexes++;
      }
    }
    Object.values(node).forEach(walk);
  }
})(grammar);
assert.ok(regexes > 10, "the grammar has patterns");

const keywords = [
  "from", "import", "as", "record", "enum", "type", "remote", "call", "approval", "wait", "step", "flow",
  "bindings", "let", "when", "else", "for", "in", "join", "all", "any", "at_least", "return", "timeout",
  "schedule", "timezone", "overlap", "catchup", "within", "jitter", "input", "retry", "backoff", "fixed",
  "exponential", "non_retryable", "after", "parallel", "raises", "repeat", "at_most", "until", "true", "false", "none", "and", "or", "not",
];
const text = JSON.stringify(grammar);
for (const k of keywords) {
  assert.ok(new RegExp(`\\b${k}\\b`).test(text), `keyword ${k} is highlighted`);
}
console.log(`grammar ok: ${regexes} patterns, ${keywords.length} keywords`);
