import * as vscode from "vscode";

/** Payload of the server's `diffill/status` notification (lsp_server/session.py, `DiffillServer.send_status`). */
export interface ServerStatus {
  state: "loading" | "ready" | "busy" | "disabled" | "error" | "stopped" | "starting";
  model: string;
  isRandom: boolean;
  message?: string;
}

const ICONS: Record<ServerStatus["state"], string> = {
  starting: "$(sync~spin)",
  loading: "$(sync~spin)",
  ready: "$(sparkle)",
  busy: "$(loading~spin)",
  disabled: "$(circle-slash)",
  error: "$(error)",
  stopped: "$(debug-stop)",
};

/** The status bar item: model name and server state; clicking it toggles suggestions. */
export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private last: ServerStatus = { state: "starting", model: "", isRandom: false };

  constructor(toggleCommand: string) {
    this.item = vscode.window.createStatusBarItem("diffill.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "diffill";
    this.item.command = toggleCommand;
    this.render();
    this.item.show();
  }

  get status(): ServerStatus {
    return this.last;
  }

  update(status: Partial<ServerStatus>): void {
    this.last = { ...this.last, ...status };
    this.render();
  }

  private render(): void {
    const { state, model, isRandom, message } = this.last;
    const label = model ? ` ${shortModelName(model)}` : "";
    // Random weights produce noise; say so where the user looks, not only in a log.
    const random = isRandom ? " (random weights)" : "";
    this.item.text = `${ICONS[state]} diffill${label}${random}${state === "disabled" ? " (off)" : ""}`;
    const lines = [
      `diffill — ${state}`,
      model ? `Model: ${model}` : "",
      isRandom ? "This model has untrained random weights: its suggestions are noise." : "",
      message ?? "",
      state === "disabled" ? "Click to turn suggestions on." : "Click to turn suggestions off.",
    ];
    this.item.tooltip = lines.filter((line) => line !== "").join("\n");
    this.item.backgroundColor =
      state === "error"
        ? new vscode.ThemeColor("statusBarItem.errorBackground")
        : isRandom
          ? new vscode.ThemeColor("statusBarItem.warningBackground")
          : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}

/** Hub ids and paths are long; the last path component is what tells models apart. */
export function shortModelName(model: string): string {
  // The server may append its own bracketed note ("[RANDOM WEIGHTS: ...]"); the status bar labels that itself.
  const name = model.replace(/\s*\[[^\]]*\]\s*$/, "");
  const parts = name.split(/[\\/]/).filter((part) => part !== "");
  return parts.length > 0 ? parts[parts.length - 1] : model;
}
