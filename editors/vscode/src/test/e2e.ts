// Headless end-to-end check of the VS Code extension's server wiring. VS Code itself cannot run here, so
// this script does what the extension does with the same code: it resolves the `diffill.*` settings from
// package.json's defaults plus a user-settings object, starts the server with settings.serverLaunch(),
// sends settings.serverSettings() as initializationOptions, and then talks LSP over the process's stdio
// (vscode-languageserver-protocol, the library vscode-languageclient is built on):
//   initialize -> didOpen -> inlineCompletion -> codeAction -> codeAction/resolve -> executeCommand
//   (status, toggle, rewriteSelection with workspace/applyEdit) -> shutdown -> exit.
// Any failed expectation exits non-zero with a message; on success a JSON report goes to stdout.
//
// Usage: node out/test/e2e.js [--settings JSON] [--timeout SECONDS] [--cwd DIR]
//   --settings  user settings as in settings.json, e.g. '{"diffill.server.pythonPath": "/venv/bin/python"}'

import { ChildProcess, spawn } from "child_process";
import * as fs from "fs";
import * as path from "path";
import { pathToFileURL } from "url";
import {
  ApplyWorkspaceEditParams,
  ApplyWorkspaceEditRequest,
  ClientCapabilities,
  CodeAction,
  CodeActionRequest,
  CodeActionResolveRequest,
  Command,
  ConfigurationRequest,
  createProtocolConnection,
  DidChangeConfigurationNotification,
  DidChangeTextDocumentNotification,
  DidOpenTextDocumentNotification,
  ExecuteCommandRequest,
  ExitNotification,
  InitializeRequest,
  InitializeResult,
  InitializedNotification,
  InlineCompletionItem,
  InlineCompletionList,
  InlineCompletionRequest,
  InlineCompletionTriggerKind,
  LogMessageNotification,
  ProtocolConnection,
  Range,
  RegistrationRequest,
  ShowMessageNotification,
  ShowMessageRequest,
  ShutdownRequest,
  StreamMessageReader,
  StreamMessageWriter,
  TextEdit,
  UnregistrationRequest,
  WorkDoneProgressCreateRequest,
  WorkspaceEdit,
} from "vscode-languageserver-protocol/node";
import { TextDocument } from "vscode-languageserver-textdocument";
import { ConfigReader, serverLaunch, serverSettings } from "../settings";

const EXTENSION_ROOT = path.resolve(__dirname, "..", "..");

class Failure extends Error {}

function expect(condition: unknown, message: string): asserts condition {
  if (!condition) {
    throw new Failure(message);
  }
}

/** `workspace.getConfiguration('diffill')` as VS Code would resolve it: package.json defaults, then user values. */
export function settingsReader(user: Record<string, unknown>): ConfigReader {
  const manifest = JSON.parse(fs.readFileSync(path.join(EXTENSION_ROOT, "package.json"), "utf8"));
  const properties: Record<string, { default?: unknown }> = manifest.contributes.configuration.properties;
  const values: Record<string, unknown> = {};
  for (const [key, schema] of Object.entries(properties)) {
    values[key] = schema.default;
  }
  for (const [key, value] of Object.entries(user)) {
    expect(key in properties, `unknown setting ${key}: package.json does not contribute it`);
    values[key] = value;
  }
  return {
    get<T>(key: string): T | undefined {
      return values[`diffill.${key}`] as T | undefined;
    },
  };
}

// VS Code 1.91's client capabilities, trimmed to what the diffill server looks at.
const CAPABILITIES: ClientCapabilities = {
  general: { positionEncodings: ["utf-16"] },
  window: { workDoneProgress: true, showMessage: { messageActionItem: { additionalPropertiesSupport: true } } },
  workspace: {
    applyEdit: true,
    configuration: true,
    didChangeConfiguration: { dynamicRegistration: true },
    executeCommand: { dynamicRegistration: true },
    workspaceEdit: { documentChanges: true, resourceOperations: ["create", "rename", "delete"] },
  },
  textDocument: {
    synchronization: { dynamicRegistration: true, didSave: true, willSave: true, willSaveWaitUntil: true },
    inlineCompletion: { dynamicRegistration: true },
    completion: {
      dynamicRegistration: true,
      completionItem: { snippetSupport: true, insertReplaceSupport: true, resolveSupport: { properties: ["documentation", "detail", "additionalTextEdits"] } },
    },
    codeAction: {
      dynamicRegistration: true,
      isPreferredSupport: true,
      disabledSupport: true,
      dataSupport: true,
      resolveSupport: { properties: ["edit"] },
      codeActionLiteralSupport: {
        codeActionKind: {
          valueSet: ["", "quickfix", "refactor", "refactor.extract", "refactor.inline", "refactor.rewrite", "source", "source.organizeImports"],
        },
      },
    },
    rename: { dynamicRegistration: true, prepareSupport: true },
  },
};

// A Python file with a hole: the cursor sits after `total = ` on line 1.
const SOURCE = [
  "def mean(values):",
  "    total = ",
  "    for v in values:",
  "        total += v",
  "    return total / len(values)",
  "",
  "",
  "def greet(name):",
  '    message = "Hello, " + name',
  "    return message",
  "",
  "",
  "def add(a, b):",
  "    pass",
  "",
].join("\n");
const HOLE = { line: 1, character: "    total = ".length };
// The body of greet(), to rewrite.
const REWRITE_RANGE: Range = { start: { line: 8, character: 4 }, end: { line: 8, character: SOURCE.split("\n")[8].length } };

// Rejects every pending wait when the server process dies, so a crash is reported at once with
// its exit code instead of as a timeout.
let serverGone: ((reason: Failure) => void)[] = [];
let serverExit: Failure | undefined;

// Seconds each step took, for the report: a slow step shows up here before it becomes a timeout.
const started = Date.now();
const timings: Record<string, number> = {};

function withTimeout<T>(promise: Thenable<T>, seconds: number, what: string): Promise<T> {
  const begin = Date.now();
  return new Promise<T>((resolve, reject) => {
    if (serverExit) {
      reject(serverExit);
      return;
    }
    serverGone.push(reject);
    const timer = setTimeout(() => reject(new Failure(`${what}: no answer within ${seconds} s`)), seconds * 1000);
    promise.then(
      (value) => {
        clearTimeout(timer);
        timings[what] = (Date.now() - begin) / 1000;
        resolve(value);
      },
      (error) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

function editsFor(edit: WorkspaceEdit, uri: string): TextEdit[] {
  const edits: TextEdit[] = [...(edit.changes?.[uri] ?? [])];
  for (const change of edit.documentChanges ?? []) {
    if ("textDocument" in change && change.textDocument.uri === uri) {
      for (const e of change.edits) {
        edits.push(e as TextEdit);
      }
    }
  }
  return edits;
}

function inlineItems(result: InlineCompletionList | InlineCompletionItem[] | null): InlineCompletionItem[] {
  if (result === null) {
    return [];
  }
  return Array.isArray(result) ? result : result.items;
}

function insertText(item: InlineCompletionItem): string {
  return typeof item.insertText === "string" ? item.insertText : item.insertText.value;
}

interface Report {
  launch: { command: string; args: string[] };
  serverCommands: string[];
  statuses: unknown[];
  messages: { type: number; message: string }[];
  inline: { text: string; range?: Range }[];
  codeActions: string[];
  rewrite: { edits: TextEdit[]; before: string; after: string };
  command: { edits: TextEdit[]; after: string };
  toggledOffItems: number;
  status: unknown;
  timings: Record<string, number>;
}

async function run(
  connection: ProtocolConnection,
  server: ChildProcess,
  onShutdown: () => void,
  reader: ConfigReader,
  timeout: number,
  cwd: string,
  report: Partial<Report>,
): Promise<void> {
  let document = TextDocument.create(pathToFileURL(path.join(cwd, "sample.py")).toString(), "python", 1, SOURCE);
  const uri = document.uri;
  const statuses: { state?: string }[] = [];
  const applied: ApplyWorkspaceEditParams[] = [];
  let onStatus: (() => void) | undefined;
  report.statuses = statuses;
  report.messages = [];

  // The requests and notifications the server may send a VS Code client, answered as VS Code would.
  connection.onRequest(ApplyWorkspaceEditRequest.type, (params) => {
    const edits = editsFor(params.edit, uri);
    document = TextDocument.create(uri, "python", document.version + 1, TextDocument.applyEdits(document, edits));
    applied.push(params);
    // Like VS Code, tell the server about the edit it caused.
    void connection.sendNotification(DidChangeTextDocumentNotification.type, {
      textDocument: { uri, version: document.version },
      contentChanges: [{ text: document.getText() }],
    });
    return { applied: true };
  });
  connection.onRequest(ConfigurationRequest.type, (params) =>
    params.items.map((item) => (item.section === "diffill" ? serverSettings(reader) : null)),
  );
  connection.onRequest(WorkDoneProgressCreateRequest.type, () => undefined);
  connection.onRequest(RegistrationRequest.type, () => undefined);
  connection.onRequest(UnregistrationRequest.type, () => undefined);
  connection.onRequest(ShowMessageRequest.type, () => null);
  connection.onNotification(ShowMessageNotification.type, (params) => {
    report.messages!.push(params);
  });
  connection.onNotification(LogMessageNotification.type, (params) => {
    process.stderr.write(`[server log] ${params.message}\n`);
  });
  connection.onNotification("diffill/status", (params: { state?: string }) => {
    statuses.push(params);
    onStatus?.();
  });
  connection.onNotification("$/progress", () => undefined);
  connection.listen();

  const init: InitializeResult = await withTimeout(
    connection.sendRequest(InitializeRequest.type, {
      processId: process.pid,
      clientInfo: { name: "Visual Studio Code (diffill e2e)", version: "1.91.0" },
      rootUri: pathToFileURL(cwd).toString(),
      workspaceFolders: [{ uri: pathToFileURL(cwd).toString(), name: path.basename(cwd) }],
      capabilities: CAPABILITIES,
      initializationOptions: serverSettings(reader),
    }),
    timeout,
    "initialize",
  );
  const caps = init.capabilities;
  expect(caps.inlineCompletionProvider, "server does not advertise inlineCompletionProvider");
  expect(
    typeof caps.codeActionProvider === "object" && caps.codeActionProvider.resolveProvider === true,
    "server's codeActionProvider lacks resolveProvider=true",
  );
  const serverCommands = caps.executeCommandProvider?.commands ?? [];
  report.serverCommands = serverCommands;
  for (const command of ["diffill.rewriteSelection", "diffill.fillBody", "diffill.repair", "diffill.suggestName", "diffill.toggle", "diffill.status"]) {
    expect(serverCommands.includes(command), `server does not offer the command ${command}`);
  }
  await connection.sendNotification(InitializedNotification.type, {});
  await connection.sendNotification(DidOpenTextDocumentNotification.type, {
    textDocument: { uri, languageId: "python", version: document.version, text: document.getText() },
  });

  // The model loads in the background; the status notification says when it is ready.
  const ready = () => statuses.some((s) => s.state === "ready");
  if (!ready()) {
    await withTimeout(new Promise<void>((resolve) => (onStatus = () => ready() && resolve())), timeout, "diffill/status ready");
  }
  expect(!statuses.some((s) => s.state === "error"), `server reported an error status: ${JSON.stringify(statuses)}`);

  const status = await withTimeout(connection.sendRequest(ExecuteCommandRequest.type, { command: "diffill.status", arguments: [] }), timeout, "diffill.status");
  report.status = status;
  expect(status && typeof status === "object" && "model" in status && "state" in status, `diffill.status returned ${JSON.stringify(status)}`);

  const inline = inlineItems(
    await withTimeout(
      connection.sendRequest(InlineCompletionRequest.type, {
        textDocument: { uri },
        position: HOLE,
        context: { triggerKind: InlineCompletionTriggerKind.Invoked },
      }),
      timeout,
      "textDocument/inlineCompletion",
    ),
  );
  report.inline = inline.map((item) => ({ text: insertText(item), range: item.range }));
  expect(inline.length > 0, "inline completion at the hole returned no items");
  for (const item of inline) {
    expect(typeof insertText(item) === "string", "inline item without insertText");
    if (item.range) {
      // LSP: an inline completion's range must lie on one line and contain the cursor.
      expect(item.range.start.line === item.range.end.line, `inline item range spans lines: ${JSON.stringify(item.range)}`);
      expect(item.range.start.line === HOLE.line, `inline item range is not on the cursor's line: ${JSON.stringify(item.range)}`);
      expect(item.range.start.character <= HOLE.character && item.range.end.character >= HOLE.character, `inline item range does not contain the cursor: ${JSON.stringify(item.range)}`);
    }
  }

  const actions = (await withTimeout(
    connection.sendRequest(CodeActionRequest.type, {
      textDocument: { uri },
      range: REWRITE_RANGE,
      context: { diagnostics: [], triggerKind: 1 },
    }),
    timeout,
    "textDocument/codeAction",
  )) as (CodeAction | Command)[] | null;
  const titles = (actions ?? []).map((action) => action.title);
  report.codeActions = titles;
  const rewrite = (actions ?? []).find((action): action is CodeAction => action.title === "diffill: Rewrite selection" && "kind" in action);
  expect(rewrite, `no "diffill: Rewrite selection" code action among ${JSON.stringify(titles)}`);
  expect(rewrite.kind === "refactor.rewrite", `rewrite action has kind ${rewrite.kind}`);
  // Computing the edit costs model time, so the server must leave it to codeAction/resolve.
  expect(rewrite.edit === undefined, "rewrite action came with its edit already computed (it should be lazy)");

  const resolved = await withTimeout(connection.sendRequest(CodeActionResolveRequest.type, rewrite), timeout, "codeAction/resolve");
  expect(resolved.edit, "codeAction/resolve returned no edit");
  const edits = editsFor(resolved.edit, uri);
  expect(edits.length > 0, `resolved edit has no text edits for ${uri}: ${JSON.stringify(resolved.edit)}`);
  const before = document.getText();
  const after = TextDocument.applyEdits(document, edits);
  report.rewrite = { edits, before, after };
  for (const edit of edits) {
    // The server may widen the selection to whole syntax nodes, but not past the function it lies in.
    expect(edit.range.start.line >= 7 && edit.range.end.line <= 10, `rewrite edit reaches outside greet(): ${JSON.stringify(edit.range)}`);
  }
  const unchanged = (text: string) => text.split("\n").slice(0, 7).join("\n");
  expect(unchanged(after) === unchanged(before), "rewrite changed lines above greet()");

  // A settings change arrives as the extension sends it; the server must take it without complaint.
  const messagesBefore = report.messages!.length;
  await connection.sendNotification(DidChangeConfigurationNotification.type, {
    settings: { diffill: { ...serverSettings(reader), candidates: 2 } },
  });
  const afterChange = await withTimeout(connection.sendRequest(ExecuteCommandRequest.type, { command: "diffill.status", arguments: [] }), timeout, "diffill.status after didChangeConfiguration");
  expect(afterChange && (afterChange as { enabled?: boolean }).enabled === true, `status after a settings change: ${JSON.stringify(afterChange)}`);
  const complaints = report.messages!.slice(messagesBefore);
  expect(complaints.length === 0, `the server complained about the extension's settings: ${JSON.stringify(complaints)}`);

  // Switched off, the server offers nothing; switched on again, it does.
  const off = await withTimeout(connection.sendRequest(ExecuteCommandRequest.type, { command: "diffill.toggle", arguments: [false] }), timeout, "diffill.toggle");
  expect(off && (off as { enabled?: boolean }).enabled === false, `diffill.toggle [false] returned ${JSON.stringify(off)}`);
  const whileOff = inlineItems(
    await withTimeout(
      connection.sendRequest(InlineCompletionRequest.type, { textDocument: { uri }, position: HOLE, context: { triggerKind: InlineCompletionTriggerKind.Automatic } }),
      timeout,
      "inlineCompletion while disabled",
    ),
  );
  report.toggledOffItems = whileOff.length;
  expect(whileOff.length === 0, `disabled server still offered ${whileOff.length} inline items`);
  const on = await withTimeout(connection.sendRequest(ExecuteCommandRequest.type, { command: "diffill.toggle", arguments: [true] }), timeout, "diffill.toggle");
  expect(on && (on as { enabled?: boolean }).enabled === true, `diffill.toggle [true] returned ${JSON.stringify(on)}`);

  // A command edits through workspace/applyEdit, as the extension's "Rewrite Selection" does.
  const appliedBefore = applied.length;
  const beforeCommand = document.getText().split("\n");
  const target = "        total += v";
  const row = beforeCommand.indexOf(target);
  expect(row >= 0, "sample lost the line `total += v`");
  const command = await withTimeout(
    connection.sendRequest(ExecuteCommandRequest.type, {
      command: "diffill.rewriteSelection",
      arguments: [uri, { start: { line: row, character: 8 }, end: { line: row, character: target.length } }],
    }),
    timeout,
    "diffill.rewriteSelection",
  );
  expect(command === null, `diffill.rewriteSelection returned ${JSON.stringify(command)} instead of null`);
  const commandEdits = applied.slice(appliedBefore);
  expect(commandEdits.length === 1, `diffill.rewriteSelection sent ${commandEdits.length} workspace/applyEdit requests`);
  const edited = editsFor(commandEdits[0].edit, uri);
  expect(edited.length > 0, `workspace/applyEdit carried no edit for ${uri}`);
  const afterCommand = document.getText().split("\n");
  // Above the loop nothing may change; the rewritten span is the loop body at most.
  expect(afterCommand.slice(0, 2).join("\n") === beforeCommand.slice(0, 2).join("\n"), "the command changed lines above the loop");
  for (const e of edited) {
    expect(e.range.start.line >= 2 && e.range.end.line <= row, `the command's edit reaches outside the loop: ${JSON.stringify(e.range)}`);
  }
  report.command = { edits: edited, after: document.getText() };

  const exited = new Promise<number | null>((resolve) => {
    if (server.exitCode !== null) {
      resolve(server.exitCode);
    } else {
      server.once("exit", (exitCode) => resolve(exitCode));
    }
  });
  onShutdown();
  await withTimeout(connection.sendRequest(ShutdownRequest.type), timeout, "shutdown");
  await connection.sendNotification(ExitNotification.type);
  const code = await withTimeout(exited, 30, "server exit after shutdown/exit");
  expect(code === 0, `server exited with code ${code} after shutdown/exit`);
}

function parseArgs(argv: string[]): { settings: Record<string, unknown>; timeout: number; cwd: string } {
  let settings: Record<string, unknown> = {};
  let timeout = 120;
  let cwd = process.cwd();
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case "--settings":
        settings = JSON.parse(value);
        i++;
        break;
      case "--timeout":
        timeout = Number(value);
        i++;
        break;
      case "--cwd":
        cwd = path.resolve(value);
        i++;
        break;
      default:
        throw new Failure(`unknown argument ${argv[i]}`);
    }
  }
  return { settings, timeout, cwd };
}

async function main(): Promise<number> {
  const { settings, timeout, cwd } = parseArgs(process.argv.slice(2));
  const reader = settingsReader(settings);
  const launch = serverLaunch(reader, process.env);
  const report: Partial<Report> = { launch: { command: launch.command, args: launch.args } };
  // Spawned as vscode-languageclient spawns an Executable server: no shell, stdio pipes.
  const server = spawn(launch.command, launch.args, { cwd, env: launch.env, stdio: ["pipe", "pipe", "pipe"], shell: false });
  let spawnError: Error | undefined;
  server.on("error", (error) => (spawnError = error));
  let shuttingDown = false;
  server.on("exit", (code, signal) => {
    if (!shuttingDown) {
      serverExit = new Failure(`the server exited unexpectedly (code ${code}, signal ${signal})`);
      for (const reject of serverGone) {
        reject(serverExit);
      }
      serverGone = [];
    }
  });
  server.stderr!.on("data", (chunk: Buffer) => process.stderr.write(`[server] ${chunk.toString()}`));
  const connection = createProtocolConnection(new StreamMessageReader(server.stdout!), new StreamMessageWriter(server.stdin!));
  try {
    await run(connection, server, () => (shuttingDown = true), reader, timeout, cwd, report);
    report.timings = { ...timings, total: (Date.now() - started) / 1000 };
    process.stdout.write(JSON.stringify(report, null, 2) + "\n");
    return 0;
  } catch (error) {
    const message = spawnError ? `could not start ${launch.command}: ${spawnError.message}` : (error as Error).message;
    process.stderr.write(`e2e FAILED: ${message}\n`);
    if (!(error instanceof Failure) && !spawnError) {
      process.stderr.write(`${(error as Error).stack}\n`);
    }
    process.stderr.write(`report so far: ${JSON.stringify(report)}\n`);
    return 1;
  } finally {
    connection.dispose();
    if (server.exitCode === null) {
      server.kill();
    }
  }
}

main().then((code) => process.exit(code));
