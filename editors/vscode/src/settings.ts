// What the extension sends the server and how it starts it, computed from the `diffill.*` settings.
// This module must not import 'vscode': the headless end-to-end test (src/test/e2e.ts) runs it under
// plain Node so that the test starts the server exactly the way the extension does.

import * as fs from "fs";
import * as path from "path";

/** Reads one `diffill.*` setting by its key without the `diffill.` prefix (like WorkspaceConfiguration.get). */
export interface ConfigReader {
  get<T>(key: string): T | undefined;
}

export interface FeatureSettings {
  inlineCompletion: boolean;
  completion: boolean;
  rewrite: boolean;
  fillBody: boolean;
  repair: boolean;
  suggestName: boolean;
  rename: boolean;
  unlikelyHints: boolean;
}

/**
 * The server's settings (lsp_server/settings.py, `Settings`, in camelCase): the initializationOptions and
 * didChangeConfiguration payload.
 */
export interface ServerSettings {
  enabled: boolean;
  model: string | null;
  device: string;
  allowNetwork: boolean;
  trustRemoteCode: boolean;
  maxHoleTokens: number;
  threshold: number;
  candidates: number;
  debounceMs: number;
  lengths: number[];
  maxSteps: number;
  actionMaxTokens: number;
  actionMaxSteps: number;
  actionTimeoutMs: number;
  commandReplyMs: number;
  features: FeatureSettings;
  server: { url: string | null; token: string | null };
}

export const FEATURE_KEYS: readonly (keyof FeatureSettings)[] = [
  "inlineCompletion",
  "completion",
  "rewrite",
  "fillBody",
  "repair",
  "suggestName",
  "rename",
  "unlikelyHints",
];

let manifestDefaults: Record<string, unknown> | undefined;

/**
 * The default of a `diffill.*` setting (key without the prefix), as package.json contributes it. VS Code shows
 * those defaults to the user, and tests/editors/test_vscode_e2e.py keeps them equal to the server's own
 * (lsp_server/settings.py, the one place each is decided); this module restates none of them.
 */
function manifestDefault(key: string): unknown {
  if (manifestDefaults === undefined) {
    const manifest = JSON.parse(fs.readFileSync(path.join(__dirname, "..", "package.json"), "utf8"));
    const properties: Record<string, { default?: unknown }> = manifest.contributes.configuration.properties;
    manifestDefaults = {};
    for (const [name, schema] of Object.entries(properties)) {
      manifestDefaults[name.slice("diffill.".length)] = schema.default;
    }
  }
  return manifestDefaults[key];
}

function pick<T>(cfg: ConfigReader, key: string, fallback: T): T {
  const value = cfg.get<T>(key);
  return value === undefined ? fallback : value;
}

/** A server setting from the reader; one it lacks (a test harness, an old settings file) gets its default. */
function setting<T>(cfg: ConfigReader, key: string): T {
  return pick(cfg, key, manifestDefault(key) as T);
}

/** The settings object the server expects, built only from the keys the server knows. */
export function serverSettings(cfg: ConfigReader): ServerSettings {
  const features = {} as FeatureSettings;
  for (const key of FEATURE_KEYS) {
    features[key] = setting(cfg, `features.${key}`);
  }
  const model = setting<string | null>(cfg, "model");
  const url = setting<string | null>(cfg, "server.url");
  const token = setting<string | null>(cfg, "server.token");
  return {
    enabled: setting(cfg, "enabled"),
    // An empty string in the settings UI means "not set", the same as null (the bundled model).
    model: model === "" ? null : model,
    device: setting(cfg, "device"),
    allowNetwork: setting(cfg, "allowNetwork"),
    trustRemoteCode: setting(cfg, "trustRemoteCode"),
    maxHoleTokens: setting(cfg, "maxHoleTokens"),
    threshold: setting(cfg, "threshold"),
    candidates: setting(cfg, "candidates"),
    debounceMs: setting(cfg, "debounceMs"),
    lengths: setting(cfg, "lengths"),
    maxSteps: setting(cfg, "maxSteps"),
    actionMaxTokens: setting(cfg, "actionMaxTokens"),
    actionMaxSteps: setting(cfg, "actionMaxSteps"),
    actionTimeoutMs: setting(cfg, "actionTimeoutMs"),
    commandReplyMs: setting(cfg, "commandReplyMs"),
    features,
    // Empty means "not set": the server loads the model itself.
    server: { url: url === "" ? null : url, token: token === "" ? null : token },
  };
}

/** A server process to spawn: LSP over its stdin/stdout. */
export interface ServerLaunch {
  command: string;
  args: string[];
  env: Record<string, string | undefined>;
}

export class LaunchConfigError extends Error {}

export const DEFAULT_SERVER_COMMAND: readonly string[] = ["diffill", "serve"];

/**
 * How to start the server: `diffill.server.pythonPath` (as `<python> -m lsp_server`) when set, else
 * `diffill.server.command`; `diffill.server.env` is laid over the given base environment.
 */
export function serverLaunch(
  cfg: ConfigReader,
  baseEnv: Record<string, string | undefined>,
): ServerLaunch {
  const extraEnv = pick<Record<string, unknown>>(cfg, "server.env", {});
  const env: Record<string, string | undefined> = { ...baseEnv };
  for (const [name, value] of Object.entries(extraEnv ?? {})) {
    if (typeof value !== "string") {
      throw new LaunchConfigError(`diffill.server.env.${name} must be a string, got ${typeof value}`);
    }
    env[name] = value;
  }
  const python = pick(cfg, "server.pythonPath", "").trim();
  if (python !== "") {
    return { command: python, args: ["-m", "lsp_server"], env };
  }
  const argv = pick<unknown>(cfg, "server.command", DEFAULT_SERVER_COMMAND);
  if (!Array.isArray(argv) || argv.length === 0 || !argv.every((part) => typeof part === "string")) {
    throw new LaunchConfigError(
      'diffill.server.command must be a non-empty list of strings, for example ["diffill", "serve"]',
    );
  }
  const [command, ...args] = argv as string[];
  if (command.trim() === "") {
    throw new LaunchConfigError("diffill.server.command starts with an empty program name");
  }
  return { command, args, env };
}

/** True when a change to this setting key (without prefix) needs a new server process. */
export function needsRestart(key: string): boolean {
  // server.url and server.token are the server's own settings, sent like the others.
  return key.startsWith("server.") && key !== "server.url" && key !== "server.token";
}
