-- Inline suggestions: ask the server (textDocument/inlineCompletion), show the answer as ghost text,
-- accept it whole or line by line, or dismiss it. While typing in insert mode, requests wait for a
-- quiet spell (debounce) and a new request cancels the one still in flight ($/cancelRequest).
local ghost = require("diffill.ghost")
local lsp = require("diffill.lsp")
local status = require("diffill.status")

local M = {}

-- Counters for tests and for anyone wondering how much work the plugin asks of the server.
M.stats = { requests = 0, cancelled = 0, shown = 0, discarded = 0 }

local pending = {} -- bufnr -> { client, id }
local current = {} -- bufnr -> suggestion (see show())
local timer = nil

local TRIGGER = { invoked = 1, automatic = 2 } -- LSP InlineCompletionTriggerKind

local function resolve(bufnr)
  return (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
end

local function tick(bufnr)
  return vim.api.nvim_buf_get_changedtick(bufnr)
end

local function window_of(bufnr)
  if vim.api.nvim_win_get_buf(0) == bufnr then
    return vim.api.nvim_get_current_win()
  end
  local win = vim.fn.bufwinid(bufnr)
  return win ~= -1 and win or nil
end

local function in_insert_mode()
  local mode = vim.api.nvim_get_mode().mode
  return mode:sub(1, 1) == "i" or mode:sub(1, 1) == "R"
end

--- Where a suggestion goes for the cursor of `win`: (0-based row, byte column).
--- Insert mode: at the cursor. Normal mode: before the character under the cursor, except on the
--- line's last character, where it goes after it (completing at the end of a line is the common case
--- and normal mode cannot put the cursor past the end).
function M.insertion_point(bufnr, win)
  local cursor = vim.api.nvim_win_get_cursor(win)
  local row, col = cursor[1] - 1, cursor[2]
  if not in_insert_mode() then
    local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
    if #line > 0 and col + vim.fn.strlen(vim.fn.strcharpart(line:sub(col + 1), 0, 1)) >= #line then
      col = #line
    end
  end
  return row, col
end

--- Cancel the request in flight for the buffer, if any.
function M.cancel(bufnr)
  bufnr = resolve(bufnr)
  local p = pending[bufnr]
  if p then
    pending[bufnr] = nil
    M.stats.cancelled = M.stats.cancelled + 1
    pcall(lsp.cancel, p.client, p.id)
  end
end

--- Hide the suggestion and forget it.
function M.dismiss(bufnr)
  bufnr = resolve(bufnr)
  current[bufnr] = nil
  ghost.clear(bufnr)
end

function M.current(bufnr)
  return current[resolve(bufnr)]
end

function M.is_visible(bufnr)
  bufnr = resolve(bufnr)
  return current[bufnr] ~= nil and ghost.is_shown(bufnr)
end

--- Make `s` the buffer's suggestion and draw it: insert s.text at (s.row, s.col), replacing the
--- bytes up to s.end_col (default s.col). Also the way for other sources to present a suggestion.
---@param s {row: integer, col: integer, end_col: integer|nil, text: string, tick: integer|nil, cursor: integer[]|nil}
function M.present(bufnr, s)
  bufnr = resolve(bufnr)
  s.end_col = s.end_col or s.col
  s.tick = s.tick or tick(bufnr)
  if not s.cursor then
    local win = window_of(bufnr)
    s.cursor = win and vim.api.nvim_win_get_cursor(win) or { s.row + 1, s.col }
  end
  current[bufnr] = s
  ghost.show(bufnr, s.row, s.col, s.end_col, s.text)
end

local show = M.present

local function item_text(item)
  if type(item.insertText) == "string" then
    return item.insertText
  end
  -- A snippet without placeholders is plain text; one with placeholders is not ours to expand.
  if type(item.insertText) == "table" and type(item.insertText.value) == "string" and not item.insertText.value:find("$", 1, true) then
    return item.insertText.value
  end
  return nil
end

--- The first item that fits the cursor, as a suggestion to insert at (row, col).
--- An item's range may start before the cursor (covering what the user already typed); its text must
--- then begin with that typed text, which is not shown again.
local function pick(bufnr, row, col, result, encoding)
  local items = result and (result.items or result) or {}
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  for _, item in ipairs(items) do
    local text = item_text(item)
    if text then
      local start_col, end_col = col, col
      local range = item.range
      if range and range.start.line == row and range["end"].line == row then
        start_col = lsp.byte_of_char(line, range.start.character, encoding)
        end_col = lsp.byte_of_char(line, range["end"].character, encoding)
      end
      if start_col <= col and end_col >= col then
        local typed = line:sub(start_col + 1, col)
        if text:sub(1, #typed) == typed then
          local rest = text:sub(#typed + 1)
          if rest ~= "" or end_col > col then
            return { text = rest, end_col = end_col, item = item }
          end
        end
      end
    end
  end
  return nil
end

--- Ask the server for a suggestion at the cursor and show it.
---@param bufnr integer|nil
---@param trigger "invoked"|"automatic"
---@param callback fun(err: any, suggestion: table|nil)|nil called once with the outcome
function M.request(bufnr, trigger, callback)
  bufnr = resolve(bufnr)
  trigger = trigger or "invoked"
  local invoked = trigger == "invoked"
  local function done(err, s)
    if err and invoked then
      vim.notify("diffill: " .. tostring(err), vim.log.levels.WARN)
    end
    if callback then
      callback(err, s)
    end
  end
  local client = lsp.client(bufnr)
  if not client then
    return done("no diffill server is attached to this buffer")
  end
  local win = window_of(bufnr)
  if not win then
    return done("the buffer is not in a window")
  end
  M.cancel(bufnr)
  M.dismiss(bufnr)
  local encoding = lsp.encoding(client)
  local row, col = M.insertion_point(bufnr, win)
  local cursor = vim.api.nvim_win_get_cursor(win)
  local requested_tick = tick(bufnr)
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = lsp.position(bufnr, row, col, encoding),
    context = { triggerKind = TRIGGER[trigger] },
  }
  local id
  id = lsp.request(client, "textDocument/inlineCompletion", params, function(err, result)
    local p = pending[bufnr]
    if not p or p.id ~= id then
      -- Superseded or cancelled: a newer request owns the buffer now.
      M.stats.discarded = M.stats.discarded + 1
      return
    end
    pending[bufnr] = nil
    if err then
      return done(err.message or vim.inspect(err))
    end
    local now = vim.api.nvim_win_is_valid(win) and vim.api.nvim_win_get_cursor(win) or {}
    if tick(bufnr) ~= requested_tick or now[1] ~= cursor[1] or now[2] ~= cursor[2] then
      M.stats.discarded = M.stats.discarded + 1
      return done(invoked and "the buffer changed before the suggestion arrived" or nil)
    end
    local s = pick(bufnr, row, col, result, encoding)
    if not s then
      return done(invoked and "no suggestion here" or nil)
    end
    s.row, s.col, s.tick, s.cursor = row, col, requested_tick, cursor
    show(bufnr, s)
    M.stats.shown = M.stats.shown + 1
    done(nil, s)
  end, bufnr)
  if not id then
    return done("the request could not be sent (is the server running?)")
  end
  M.stats.requests = M.stats.requests + 1
  pending[bufnr] = { client = client, id = id }
end

--- Insert the shown suggestion (all of it, or up to and including its first line break).
---@param bufnr integer|nil
---@param part "all"|"line"|nil
---@return boolean accepted
function M.accept(bufnr, part)
  bufnr = resolve(bufnr)
  local s = current[bufnr]
  if not s or not ghost.is_shown(bufnr) then
    return false
  end
  if tick(bufnr) ~= s.tick then
    M.dismiss(bufnr)
    return false
  end
  local insert = s.text
  if part == "line" then
    local newline = s.text:find("\n", 1, true)
    if newline then
      insert = s.text:sub(1, newline)
    end
  end
  local remaining = s.text:sub(#insert + 1)
  local lines = vim.split(insert, "\n", { plain = true })
  -- The item's replaced range goes with its last piece.
  local end_col = remaining == "" and s.end_col or s.col
  M.dismiss(bufnr)
  vim.api.nvim_buf_set_text(bufnr, s.row, s.col, s.row, end_col, lines)
  local row = s.row + #lines - 1
  local col = (#lines == 1 and s.col or 0) + #lines[#lines]
  local win = window_of(bufnr)
  if win then
    vim.api.nvim_win_set_cursor(win, { row + 1, col })
  end
  if remaining ~= "" then
    show(bufnr, {
      row = row,
      col = col,
      end_col = col + (s.end_col - s.col),
      text = remaining,
      tick = tick(bufnr),
      cursor = win and vim.api.nvim_win_get_cursor(win) or { row + 1, col },
    })
  end
  return true
end

--- Typing the suggestion's own next characters keeps it (shortened) instead of asking again.
---@return boolean kept
local function follow_typing(bufnr, win)
  local s = current[bufnr]
  if not s then
    return false
  end
  local cursor = vim.api.nvim_win_get_cursor(win)
  local row, col = cursor[1] - 1, cursor[2]
  if row ~= s.row or col <= s.col then
    return false
  end
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  local typed = line:sub(s.col + 1, col)
  if s.text:sub(1, #typed) ~= typed or #typed >= #s.text then
    return false
  end
  show(bufnr, {
    row = row,
    col = col,
    end_col = s.end_col + #typed,
    text = s.text:sub(#typed + 1),
    tick = tick(bufnr),
    cursor = cursor,
  })
  return true
end

--- TextChangedI: keep a suggestion the user is typing through, else drop it and ask again after
--- `debounce_ms` of quiet. The request in flight is cancelled at once: its answer would be stale.
function M.on_text_changed(bufnr, debounce_ms)
  bufnr = resolve(bufnr)
  local s = current[bufnr]
  if s and s.tick == tick(bufnr) then
    return -- our own edit (accept-line)
  end
  M.cancel(bufnr)
  local win = window_of(bufnr)
  if win and follow_typing(bufnr, win) then
    return
  end
  M.dismiss(bufnr)
  if status.current.state == "disabled" then
    return
  end
  timer = timer or vim.loop.new_timer()
  timer:stop()
  timer:start(debounce_ms, 0, vim.schedule_wrap(function()
    if vim.api.nvim_get_current_buf() == bufnr and in_insert_mode() then
      M.request(bufnr, "automatic")
    end
  end))
end

--- CursorMoved(I) without an edit: the suggestion no longer belongs where the cursor is.
function M.on_cursor_moved(bufnr)
  bufnr = resolve(bufnr)
  local s = current[bufnr]
  if not s or s.tick ~= tick(bufnr) then
    return -- an edit moved the cursor; on_text_changed decides
  end
  local win = window_of(bufnr)
  local cursor = win and vim.api.nvim_win_get_cursor(win) or {}
  if cursor[1] ~= s.cursor[1] or cursor[2] ~= s.cursor[2] then
    M.dismiss(bufnr)
  end
end

--- Stop everything for the buffer (insert mode left, buffer left).
function M.reset(bufnr)
  bufnr = resolve(bufnr)
  if timer then
    timer:stop()
  end
  M.cancel(bufnr)
  M.dismiss(bufnr)
end

return M
