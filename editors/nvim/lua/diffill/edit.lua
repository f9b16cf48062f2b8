-- Server commands that edit the buffer (rewrite, fill body, repair, suggest a name) and the ones
-- that report or switch state (toggle, status). The server computes the edit and sends it back as
-- workspace/applyEdit, which Neovim's built-in handler applies; these functions only ask.
local lsp = require("diffill.lsp")
local status = require("diffill.status")

local M = {}

local function resolve(bufnr)
  return (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
end

-- The attached diffill client, or nil after telling the user (and `callback`) there is none.
local function with_client(bufnr, callback)
  local client = lsp.client(bufnr)
  if not client then
    local message = "no diffill server is attached to this buffer"
    vim.notify("diffill: " .. message, vim.log.levels.WARN)
    if callback then
      callback(message, nil)
    end
    return nil
  end
  return client
end

--- workspace/executeCommand; `callback(err, result)` runs when the server answers.
function M.execute(bufnr, command, arguments, title, callback)
  bufnr = resolve(bufnr)
  local client = with_client(bufnr, callback)
  if not client then
    return
  end
  if title then
    vim.api.nvim_echo({ { ("diffill: %s…"):format(title), "Comment" } }, false, {})
  end
  local id = lsp.request(client, "workspace/executeCommand", { command = command, arguments = arguments }, function(err, result)
    if err then
      vim.notify(("diffill: %s failed: %s"):format(title or command, err.message or vim.inspect(err)), vim.log.levels.ERROR)
    elseif title then
      vim.api.nvim_echo({ { "" } }, false, {})
    end
    if callback then
      callback(err, result)
    end
  end, bufnr)
  if not id and callback then
    callback("the request could not be sent", nil)
  end
end

local function line_text(bufnr, row)
  return vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
end

--- The LSP range a command's line range / visual selection stands for.
--- `opts` is what nvim_create_user_command passes (range, line1, line2). A charwise visual selection
--- (marks '< and '> on exactly those lines) gives its exact characters, anything else whole lines.
---@return table|nil range
function M.command_range(bufnr, opts, encoding)
  bufnr = resolve(bufnr)
  local first, last
  if opts.range == 0 then
    local row = vim.api.nvim_win_get_cursor(0)[1]
    first, last = row, row
  else
    first, last = opts.line1, opts.line2
  end
  local start_mark = vim.api.nvim_buf_get_mark(bufnr, "<")
  local end_mark = vim.api.nvim_buf_get_mark(bufnr, ">")
  local charwise = opts.range ~= 0
    and vim.fn.visualmode() == "v"
    and start_mark[1] == first
    and end_mark[1] == last
  local start_col, end_col
  if charwise then
    start_col = start_mark[2]
    local end_line = line_text(bufnr, last - 1)
    -- '> is on the last selected character: the range ends after it (it may be several bytes).
    local char = vim.fn.strcharpart(end_line:sub(end_mark[2] + 1), 0, 1)
    end_col = math.min(end_mark[2] + math.max(#char, 1), #end_line)
  else
    start_col, end_col = 0, #line_text(bufnr, last - 1)
  end
  return {
    start = lsp.position(bufnr, first - 1, start_col, encoding),
    ["end"] = lsp.position(bufnr, last - 1, end_col, encoding),
  }
end

local function cursor_position(bufnr, client)
  local cursor = vim.api.nvim_win_get_cursor(0)
  return lsp.position(bufnr, cursor[1] - 1, cursor[2], lsp.encoding(client))
end

-- The commands take [uri, position] or [uri, range], as the server's code actions do.
local function at_cursor(command, doing, callback, bufnr)
  bufnr = resolve(bufnr)
  local client = with_client(bufnr, callback)
  if client then
    M.execute(bufnr, command, { vim.uri_from_bufnr(bufnr), cursor_position(bufnr, client) }, doing, callback)
  end
end

local function over_range(bufnr, client, command, opts, doing, callback)
  local range = M.command_range(bufnr, opts, lsp.encoding(client))
  M.execute(bufnr, command, { vim.uri_from_bufnr(bufnr), range }, doing, callback)
end

--- Rewrite the selected code (the server widens it to whole syntax nodes).
function M.rewrite(opts, callback, bufnr)
  bufnr = resolve(bufnr)
  local client = with_client(bufnr, callback)
  if not client then
    return
  end
  if opts.range == 0 then
    vim.notify("diffill: select the code to rewrite first (visual mode, then :DiffillRewrite)", vim.log.levels.WARN)
    if callback then
      callback("no selection", nil)
    end
    return
  end
  over_range(bufnr, client, "diffill.rewriteSelection", opts, "rewriting", callback)
end

--- Fill in the body of the function (or block) at the cursor.
function M.fill(callback, bufnr)
  at_cursor("diffill.fillBody", "filling in the body", callback, bufnr)
end

--- Repair the given lines / selection (the cursor's line without one).
function M.repair(opts, callback, bufnr)
  bufnr = resolve(bufnr)
  local client = with_client(bufnr, callback)
  if client then
    over_range(bufnr, client, "diffill.repair", opts or { range = 0 }, "repairing", callback)
  end
end

--- Suggest a name for the symbol at the cursor (renames its occurrences).
function M.suggest_name(callback, bufnr)
  at_cursor("diffill.suggestName", "suggesting a name", callback, bufnr)
end

--- Switch suggestions on/off in the server (`enable` nil flips).
function M.toggle(enable, callback, bufnr)
  local arguments = enable == nil and {} or { enable }
  M.execute(bufnr, "diffill.toggle", arguments, nil, function(err, result)
    if not err and type(result) == "table" then
      status.update({ state = result.enabled and "ready" or "disabled", enabled = result.enabled })
      vim.notify(("diffill: suggestions %s"):format(result.enabled and "on" or "off"))
    end
    if callback then
      callback(err, result)
    end
  end)
end

--- Ask the server how it is and print it.
function M.status(callback, bufnr)
  M.execute(bufnr, "diffill.status", {}, nil, function(err, result)
    if not err and type(result) == "table" then
      local random = result.isRandom and " — random weights: suggestions are noise" or ""
      vim.notify(("diffill: %s, model %s on %s, %s%s"):format(
        tostring(result.state),
        tostring(result.model),
        tostring(result.device),
        result.enabled and "enabled" or "disabled",
        random
      ))
    end
    if callback then
      callback(err, result)
    end
  end)
end

return M
