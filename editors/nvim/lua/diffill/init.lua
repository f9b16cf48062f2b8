-- diffill for Neovim: masked-diffusion code infilling through the diffill language server.
--
--   require("diffill").setup({ cmd = { "diffill", "serve" }, settings = { maxHoleTokens = 64 } })
--
-- Commands (every Neovim from 0.7): :DiffillSuggest :DiffillAccept :DiffillAcceptLine :DiffillDismiss
-- :'<,'>DiffillRewrite :DiffillFill :[range]DiffillRepair :DiffillName :DiffillToggle [on|off]
-- :DiffillStatus. See editors/nvim/README.md.
local config = require("diffill.config")
local edit = require("diffill.edit")
local ghost = require("diffill.ghost")
local lsp = require("diffill.lsp")
local status = require("diffill.status")
local suggest = require("diffill.suggest")

local M = {}

M.ns = ghost.ns
M.options = nil

local function native_inline(opts)
  return lsp.has_012 and opts.native_inline_completion and opts.auto_trigger and vim.lsp.inline_completion ~= nil
end

--- An insert-mode key that acts only while a suggestion is shown and is itself otherwise.
local function map_insert(lhs, action, use_native, desc)
  if not lhs then
    return
  end
  vim.keymap.set("i", lhs, function()
    if suggest.is_visible(0) then
      return ("<Cmd>lua require('diffill').%s()<CR>"):format(action)
    end
    if use_native and action == "accept" and vim.lsp.inline_completion.get() then
      return ""
    end
    return lhs
  end, { expr = true, replace_keycodes = true, silent = true, desc = desc })
end

local function create_commands()
  local command = vim.api.nvim_create_user_command
  command("DiffillSuggest", function()
    M.suggest()
  end, { desc = "diffill: ask for a suggestion at the cursor and show it as ghost text" })
  command("DiffillAccept", function()
    if not M.accept() then
      vim.notify("diffill: no suggestion to accept", vim.log.levels.WARN)
    end
  end, { desc = "diffill: insert the shown suggestion" })
  command("DiffillAcceptLine", function()
    if not M.accept_line() then
      vim.notify("diffill: no suggestion to accept", vim.log.levels.WARN)
    end
  end, { desc = "diffill: insert the first line of the shown suggestion" })
  command("DiffillDismiss", function()
    M.dismiss()
  end, { desc = "diffill: hide the suggestion" })
  command("DiffillRewrite", function(opts)
    M.rewrite(opts)
  end, { range = true, desc = "diffill: rewrite the selected code" })
  command("DiffillFill", function()
    M.fill()
  end, { desc = "diffill: fill in the body at the cursor" })
  command("DiffillRepair", function(opts)
    M.repair(opts)
  end, { range = true, desc = "diffill: repair unlikely code in the range (default: this line)" })
  command("DiffillName", function()
    M.suggest_name()
  end, { desc = "diffill: suggest a name for the symbol at the cursor" })
  command("DiffillToggle", function(opts)
    local arg = opts.args
    if arg ~= "" and arg ~= "on" and arg ~= "off" then
      vim.notify("diffill: :DiffillToggle takes on, off or nothing", vim.log.levels.ERROR)
      return
    end
    M.toggle(arg == "" and nil or arg == "on")
  end, {
    nargs = "?",
    complete = function()
      return { "on", "off" }
    end,
    desc = "diffill: switch suggestions on or off",
  })
  command("DiffillStatus", function()
    M.status()
  end, { desc = "diffill: show the server's model and state" })
end

local function create_autocmds(opts, group)
  ghost.define_highlights()
  vim.api.nvim_create_autocmd("ColorScheme", { group = group, callback = ghost.define_highlights })
  local function ours(bufnr)
    return lsp.client(bufnr) ~= nil
  end
  if opts.auto_trigger and not native_inline(opts) then
    local debounce = config.debounce_ms(opts)
    vim.api.nvim_create_autocmd({ "TextChangedI", "TextChangedP" }, {
      group = group,
      callback = function(args)
        if ours(args.buf) then
          suggest.on_text_changed(args.buf, debounce)
        end
      end,
    })
  end
  vim.api.nvim_create_autocmd({ "CursorMoved", "CursorMovedI" }, {
    group = group,
    callback = function(args)
      suggest.on_cursor_moved(args.buf)
    end,
  })
  vim.api.nvim_create_autocmd({ "InsertLeave", "BufLeave", "BufUnload" }, {
    group = group,
    callback = function(args)
      suggest.reset(args.buf)
    end,
  })
end

--- Start diffill: the server on the configured filetypes, commands, ghost text and keymaps.
---@param opts table|nil see lua/diffill/config.lua for every option and its default
function M.setup(opts)
  local resolved = config.resolve(opts)
  M.options = resolved
  local group = vim.api.nvim_create_augroup("diffill", { clear = true })
  create_commands()
  create_autocmds(resolved, group)
  lsp.enable(resolved, group)
  local use_native = native_inline(resolved)
  if use_native then
    vim.lsp.inline_completion.enable(true)
  end
  local keys = resolved.keymaps or {}
  map_insert(keys.accept, "accept", use_native, "diffill: accept the suggestion")
  map_insert(keys.accept_line, "accept_line", use_native, "diffill: accept one line of the suggestion")
  map_insert(keys.dismiss, "dismiss", use_native, "diffill: dismiss the suggestion")
  return M
end

--- Ask for a suggestion at the cursor now; `callback(err, suggestion)` when it is shown (or not).
function M.suggest(callback)
  suggest.request(0, "invoked", callback)
end

function M.accept()
  return suggest.accept(0, "all")
end

function M.accept_line()
  return suggest.accept(0, "line")
end

function M.dismiss()
  suggest.cancel(0)
  suggest.dismiss(0)
end

--- The suggestion shown in the current buffer: {row, col, end_col, text} or nil.
function M.current_suggestion()
  return suggest.current(0)
end

function M.rewrite(opts, callback)
  edit.rewrite(opts or { range = 0 }, callback)
end

function M.fill(callback)
  edit.fill(callback)
end

function M.repair(opts, callback)
  edit.repair(opts, callback)
end

function M.suggest_name(callback)
  edit.suggest_name(callback)
end

function M.toggle(enable, callback)
  edit.toggle(enable, callback)
end

function M.status(callback)
  edit.status(callback)
end

--- For 'statusline': `%{v:lua.require'diffill'.statusline()}`.
function M.statusline()
  return status.statusline()
end

return M
