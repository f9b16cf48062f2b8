-- Starting the diffill language server and talking to it, on every Neovim from 0.7 on:
--   >= 0.11  vim.lsp.config("diffill", ...) over lsp/diffill.lua, then vim.lsp.enable("diffill")
--   0.8-0.10 vim.lsp.start() from a FileType autocmd
--   0.7      vim.lsp.start_client() + vim.lsp.buf_attach_client() from a FileType autocmd
-- The Client API changed from `client.request(...)` to `client:request(...)` in 0.11; the helpers
-- here hide that, and the position-encoding helpers hide the str_utfindex signature change.
local status = require("diffill.status")

local M = {}

M.name = "diffill"
M.has_011 = vim.fn.has("nvim-0.11") == 1
M.has_012 = vim.fn.has("nvim-0.12") == 1

local clients_by_root = {} -- 0.7 only: client id per root directory

local function server_exited(code, signal)
  status.update({ state = code == 0 and "stopped" or "error", message = ("server exited (code %s, signal %s)"):format(code, signal) })
end

local function handlers()
  return {
    ["diffill/status"] = function(_, params)
      status.update(params)
    end,
  }
end

--- Directory holding one of the markers above the buffer's file, else the file's directory.
local function root_dir(bufnr, markers)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local start = name ~= "" and vim.fn.fnamemodify(name, ":p:h") or vim.loop.cwd()
  local dir = start
  while dir and dir ~= "" do
    for _, marker in ipairs(markers) do
      if vim.loop.fs_stat(dir .. "/" .. marker) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ":h")
    if parent == dir then
      break
    end
    dir = parent
  end
  return start
end

--- The settings as the server must receive them: a JSON object even when empty (an empty Lua
--- table would be encoded as the list `[]`).
function M.server_settings(opts)
  local settings = vim.deepcopy(opts.settings or {})
  if type(settings.features) == "table" and next(settings.features) == nil then
    settings.features = nil
  end
  return next(settings) == nil and vim.empty_dict() or settings
end

--- The client config shared by every version.
local function client_config(opts, root)
  local settings = M.server_settings(opts)
  return {
    name = M.name,
    cmd = opts.cmd,
    root_dir = root,
    init_options = settings,
    settings = { diffill = settings },
    handlers = handlers(),
    on_exit = server_exited,
  }
end

local function attach_old(opts, bufnr)
  local root = root_dir(bufnr, opts.root_markers)
  if vim.lsp.start then -- 0.8 - 0.10: reuses a running client with the same name and root
    vim.lsp.start(client_config(opts, root), { bufnr = bufnr })
    return
  end
  local id = clients_by_root[root]
  if not id or not vim.lsp.get_client_by_id(id) then
    local config = client_config(opts, root)
    local on_exit = config.on_exit
    config.on_exit = function(code, signal, client_id)
      if clients_by_root[root] == client_id then
        clients_by_root[root] = nil
      end
      on_exit(code, signal)
    end
    id = vim.lsp.start_client(config)
    if not id then
      vim.notify(("diffill: could not start %s"):format(table.concat(opts.cmd, " ")), vim.log.levels.ERROR)
      return
    end
    clients_by_root[root] = id
  end
  vim.lsp.buf_attach_client(bufnr, id)
end

--- Arrange for the server to start on the configured filetypes.
function M.enable(opts, group)
  if M.has_011 then
    local settings = M.server_settings(opts)
    vim.lsp.config(M.name, {
      cmd = opts.cmd,
      filetypes = opts.filetypes,
      root_markers = opts.root_markers,
      init_options = settings,
      settings = { diffill = settings },
      handlers = handlers(),
      on_exit = server_exited,
    })
    vim.lsp.enable(M.name)
    return
  end
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = opts.filetypes,
    callback = function(args)
      if vim.bo[args.buf].buftype == "" then
        attach_old(opts, args.buf)
      end
    end,
  })
  -- Buffers already open when setup() runs.
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(bufnr) and vim.tbl_contains(opts.filetypes, vim.bo[bufnr].filetype) then
      attach_old(opts, bufnr)
    end
  end
end

--- The diffill client attached to the buffer, or nil.
function M.client(bufnr)
  bufnr = (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
  if M.has_011 then
    return vim.lsp.get_clients({ bufnr = bufnr, name = M.name })[1]
  end
  for _, client in pairs(vim.lsp.buf_get_clients(bufnr)) do
    if client.name == M.name then
      return client
    end
  end
  return nil
end

--- Send a request; returns the request id or nil.
function M.request(client, method, params, handler, bufnr)
  local ok, id
  if M.has_011 then
    ok, id = client:request(method, params, handler, bufnr)
  else
    ok, id = client.request(method, params, handler, bufnr)
  end
  return ok and id or nil
end

function M.cancel(client, id)
  if M.has_011 then
    client:cancel_request(id)
  else
    client.cancel_request(id)
  end
end

function M.notify(client, method, params)
  if M.has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.encoding(client)
  return client.offset_encoding or "utf-16"
end

--- LSP character offset of byte column `byte` in `line`.
function M.char_of_byte(line, byte, encoding)
  byte = math.min(byte, #line)
  if encoding == "utf-8" then
    return byte
  end
  if M.has_011 then
    return vim.str_utfindex(line, encoding, byte, false)
  end
  local utf32, utf16 = vim.str_utfindex(line, byte)
  return encoding == "utf-16" and utf16 or utf32
end

--- Byte column of LSP character offset `char` in `line` (clamped to the line's end).
function M.byte_of_char(line, char, encoding)
  if encoding == "utf-8" then
    return math.min(char, #line)
  end
  if M.has_011 then
    return vim.str_byteindex(line, encoding, char, false)
  end
  local ok, byte = pcall(vim.str_byteindex, line, char, encoding == "utf-16")
  return ok and byte or #line
end

--- LSP position of (0-based row, byte column) in the buffer.
function M.position(bufnr, row, col, encoding)
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  return { line = row, character = M.char_of_byte(line, col, encoding) }
end

--- (0-based row, byte column) of an LSP position in the buffer.
function M.byte_position(bufnr, position, encoding)
  local line = vim.api.nvim_buf_get_lines(bufnr, position.line, position.line + 1, false)[1] or ""
  return position.line, M.byte_of_char(line, position.character, encoding)
end

return M
