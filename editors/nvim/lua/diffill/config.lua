-- Options of require("diffill").setup(), with their defaults and checks.
local M = {}

M.defaults = {
  -- Command line of the language server (LSP over stdio).
  cmd = { "diffill", "serve" },
  -- Buffers of these filetypes get the server.
  filetypes = { "python", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "rust" },
  -- Files that mark a project root; the file's own directory when none is found.
  root_markers = { ".git", "pyproject.toml", "setup.py", "package.json", "go.mod", "Cargo.toml" },
  -- Server settings (lsp_server/settings.py, `Settings`, in camelCase): sent as initializationOptions
  -- and workspace/didChangeConfiguration. Keys left out keep the server's defaults.
  settings = {},
  -- Ask for a suggestion while typing in insert mode (after settings.debounceMs of quiet).
  auto_trigger = true,
  -- On Neovim >= 0.12 use vim.lsp.inline_completion for the as-you-type ghost text instead of the
  -- plugin's own; the :Diffill* commands work the same either way.
  native_inline_completion = true,
  -- Insert-mode keys; false turns one off. Each falls back to the key's usual meaning when no
  -- suggestion is shown.
  keymaps = {
    accept = "<Tab>",
    accept_line = "<M-l>",
    dismiss = "<C-]>",
  },
}

-- The server's default debounceMs (lsp_server/settings.py, `Settings.debounce_ms`, where it is decided),
-- for when settings.debounceMs is left out: the plugin does the debouncing, so it needs the number
-- itself. tests/editors/test_nvim.py keeps the two equal.
M.default_debounce_ms = 150

local function check_list_of_strings(value, name)
  if type(value) ~= "table" or #value == 0 then
    error(("diffill: %s must be a non-empty list of strings"):format(name), 0)
  end
  for i, part in ipairs(value) do
    if type(part) ~= "string" then
      error(("diffill: %s[%d] must be a string, got %s"):format(name, i, type(part)), 0)
    end
  end
end

--- Merge user options over the defaults and check the ones the plugin itself relies on
--- (the server checks its settings and answers bad ones with a warning).
---@param opts table|nil
---@return table
function M.resolve(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("diffill: setup() expects a table of options", 0)
  end
  local resolved = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace, they do not merge index by index.
  for _, key in ipairs({ "cmd", "filetypes", "root_markers" }) do
    if opts[key] ~= nil then
      resolved[key] = opts[key]
    end
  end
  check_list_of_strings(resolved.cmd, "cmd")
  check_list_of_strings(resolved.filetypes, "filetypes")
  if type(resolved.settings) ~= "table" then
    error("diffill: settings must be a table of server settings", 0)
  end
  local debounce = resolved.settings.debounceMs
  if debounce ~= nil and (type(debounce) ~= "number" or debounce < 0) then
    error("diffill: settings.debounceMs must be a number of milliseconds >= 0", 0)
  end
  return resolved
end

---@param opts table resolved options
---@return integer
function M.debounce_ms(opts)
  return opts.settings.debounceMs or M.default_debounce_ms
end

return M
