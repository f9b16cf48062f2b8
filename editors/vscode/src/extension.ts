import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
} from "vscode-languageclient/node";
import { LaunchConfigError, serverLaunch, serverSettings } from "./settings";
import { ServerStatus, StatusBar } from "./statusBar";

// Languages the server parses with tree-sitter; elsewhere it would only see plain text.
export const LANGUAGES = ["python", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "rust"];

// The server registers its own command ids (diffill.rewriteSelection, ...) through executeCommandProvider,
// and vscode-languageclient turns each into a VS Code command. The editor-facing commands therefore live
// under diffill.action.* so the two never collide.
const TOGGLE = "diffill.action.toggle";

let client: LanguageClient | undefined;
let statusBar: StatusBar | undefined;

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration("diffill");
}

function sleep(ms: number, token: vscode.CancellationToken): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    token.onCancellationRequested(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

function makeClient(output: vscode.LogOutputChannel): LanguageClient {
  const launch = serverLaunch(config(), process.env);
  const serverOptions: ServerOptions = {
    command: launch.command,
    args: launch.args,
    options: { env: launch.env },
  };
  const clientOptions: LanguageClientOptions = {
    documentSelector: LANGUAGES.flatMap((language) => [
      { scheme: "file", language },
      { scheme: "untitled", language },
    ]),
    outputChannel: output,
    // A function, so a restart picks up the settings as they are then.
    initializationOptions: () => serverSettings(config()),
    middleware: {
      // The server computes as soon as asked; waiting out bursts of typing here keeps it from working
      // on text that is already stale. VS Code cancels the token when the user types on.
      provideInlineCompletionItems: async (document, position, context, token, next) => {
        const debounce = serverSettings(config()).debounceMs;
        if (context.triggerKind === vscode.InlineCompletionTriggerKind.Automatic && debounce > 0) {
          await sleep(debounce, token);
          if (token.isCancellationRequested) {
            return null;
          }
        }
        return next(document, position, context, token);
      },
      workspace: {
        // Answer workspace/configuration for "diffill" with the server's keys only (no client-only keys).
        configuration: async (params, token, next) => {
          const answers = await next(params, token);
          if (!Array.isArray(answers)) {
            return answers;
          }
          return params.items.map((item, index) =>
            item.section === "diffill" ? serverSettings(config()) : answers[index],
          );
        },
      },
    },
  };
  return new LanguageClient("diffill", "diffill", serverOptions, clientOptions);
}

async function execute(command: string, args: unknown[]): Promise<unknown> {
  if (!client || client.state !== State.Running) {
    throw new Error("the diffill server is not running (see the 'diffill' output, or run 'diffill: Restart Server')");
  }
  return client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args });
}

/** Runs a server command that edits the document (it answers with workspace/applyEdit). */
async function editCommand(
  title: string,
  command: string,
  args: (editor: vscode.TextEditor, c: LanguageClient) => unknown[] | undefined,
): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor || !client) {
    void vscode.window.showWarningMessage("diffill: open a file first.");
    return;
  }
  const commandArgs = args(editor, client);
  if (!commandArgs) {
    return;
  }
  try {
    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Window, title: `diffill: ${title}…` },
      () => execute(command, commandArgs),
    );
  } catch (error) {
    void vscode.window.showErrorMessage(`diffill: ${title} failed: ${(error as Error).message}`);
  }
}

function registerCommands(context: vscode.ExtensionContext, output: vscode.LogOutputChannel): void {
  const register = (id: string, run: () => unknown) =>
    context.subscriptions.push(vscode.commands.registerCommand(id, run));

  register("diffill.action.rewriteSelection", () =>
    editCommand("rewriting the selection", "diffill.rewriteSelection", (editor, c) => {
      if (editor.selection.isEmpty) {
        void vscode.window.showInformationMessage("diffill: select the code to rewrite first.");
        return undefined;
      }
      return [editor.document.uri.toString(), c.code2ProtocolConverter.asRange(editor.selection)];
    }),
  );
  register("diffill.action.fillBody", () =>
    editCommand("filling in the body", "diffill.fillBody", (editor, c) => [
      editor.document.uri.toString(),
      c.code2ProtocolConverter.asPosition(editor.selection.active),
    ]),
  );
  register("diffill.action.repair", () =>
    editCommand("repairing", "diffill.repair", (editor, c) => {
      // Without a selection, repair the cursor's line: a small, predictable span.
      const range = editor.selection.isEmpty
        ? editor.document.lineAt(editor.selection.active.line).range
        : editor.selection;
      return [editor.document.uri.toString(), c.code2ProtocolConverter.asRange(range)];
    }),
  );
  register("diffill.action.suggestName", () =>
    editCommand("suggesting a name", "diffill.suggestName", (editor, c) => [
      editor.document.uri.toString(),
      c.code2ProtocolConverter.asPosition(editor.selection.active),
    ]),
  );
  register(TOGGLE, async () => {
    try {
      const enabled = statusBar?.status.state !== "disabled";
      const result = (await execute("diffill.toggle", [!enabled])) as { enabled: boolean } | null;
      const nowEnabled = result ? result.enabled : !enabled;
      statusBar?.update({ state: nowEnabled ? "ready" : "disabled" });
      void vscode.window.setStatusBarMessage(`diffill: suggestions ${nowEnabled ? "on" : "off"}`, 3000);
    } catch (error) {
      void vscode.window.showErrorMessage(`diffill: ${(error as Error).message}`);
    }
  });
  register("diffill.action.showStatus", async () => {
    try {
      const status = (await execute("diffill.status", [])) as Record<string, unknown>;
      const random = status.isRandom ? " — random weights, suggestions are noise" : "";
      void vscode.window.showInformationMessage(
        `diffill: ${status.state}, model ${status.model} on ${status.device}, ` +
          `${status.enabled ? "enabled" : "disabled"}${random}`,
      );
    } catch (error) {
      void vscode.window.showErrorMessage(`diffill: ${(error as Error).message}`);
    }
  });
  register("diffill.action.restartServer", () => restart(context, output));
}

async function start(context: vscode.ExtensionContext, output: vscode.LogOutputChannel): Promise<void> {
  try {
    client = makeClient(output);
  } catch (error) {
    if (error instanceof LaunchConfigError) {
      statusBar?.update({ state: "error", message: error.message });
      void vscode.window.showErrorMessage(`diffill: ${error.message}`);
      return;
    }
    throw error;
  }
  const current = client;
  current.onDidChangeState((event) => {
    const running = event.newState === State.Running;
    void vscode.commands.executeCommand("setContext", "diffill.running", running);
    if (event.newState === State.Stopped) {
      statusBar?.update({ state: "stopped" });
    }
  });
  statusBar?.update({ state: "starting", message: undefined });
  // Registered before start() so the first "loading" status is not missed.
  context.subscriptions.push(
    current.onNotification("diffill/status", (status: ServerStatus) => statusBar?.update(status)),
  );
  try {
    await current.start();
  } catch (error) {
    const message = (error as Error).message;
    statusBar?.update({ state: "error", message });
    const choice = await vscode.window.showErrorMessage(
      `diffill: could not start the server (${message}). Set diffill.server.pythonPath to a Python ` +
        "that has diffill installed, or diffill.server.command.",
      "Open Settings",
    );
    if (choice === "Open Settings") {
      void vscode.commands.executeCommand("workbench.action.openSettings", "diffill.server");
    }
    return;
  }
  try {
    const status = (await execute("diffill.status", [])) as Partial<ServerStatus> & { enabled?: boolean };
    statusBar?.update({
      state: status.enabled === false ? "disabled" : (status.state ?? "ready"),
      model: status.model ?? "",
      isRandom: Boolean(status.isRandom),
    });
  } catch (error) {
    output.warn(`diffill.status failed: ${(error as Error).message}`);
  }
}

async function restart(context: vscode.ExtensionContext, output: vscode.LogOutputChannel): Promise<void> {
  const old = client;
  client = undefined;
  if (old) {
    try {
      await old.stop();
    } catch (error) {
      output.warn(`stopping the old server: ${(error as Error).message}`);
    }
  }
  await start(context, output);
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("diffill", { log: true });
  statusBar = new StatusBar(TOGGLE);
  context.subscriptions.push(output, statusBar);
  registerCommands(context, output);
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration("diffill")) {
        return;
      }
      if (event.affectsConfiguration("diffill.server")) {
        await restart(context, output);
      } else if (client && client.state === State.Running) {
        await client.sendNotification(DidChangeConfigurationNotification.type, {
          settings: { diffill: serverSettings(config()) },
        });
      }
    }),
  );
  await start(context, output);
}

export async function deactivate(): Promise<void> {
  if (client) {
    await client.stop();
  }
}
