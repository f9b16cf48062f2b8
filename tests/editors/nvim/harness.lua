-- A tiny driver for headless Neovim scenarios run by tests/editors/test_nvim.py.
--
-- A scenario is a function run in a coroutine, so it can wait (H.wait / H.sleep) while Neovim's
-- main loop keeps going: typeahead from feedkeys is processed, LSP messages arrive, timers fire.
-- Observations go into H.out (a table written as JSON to $DIFFILL_TEST_OUT when the scenario ends);
-- the Python test asserts on them. A scenario error or a timeout is recorded as H.out.error.
local H = {}

H.out = {}
H.env = {
  plugin = os.getenv("DIFFILL_TEST_PLUGIN"),
  out = os.getenv("DIFFILL_TEST_OUT"),
  cmd = os.getenv("DIFFILL_TEST_CMD") and vim.fn.json_decode(os.getenv("DIFFILL_TEST_CMD")) or nil,
  file = os.getenv("DIFFILL_TEST_FILE"),
  timeout_ms = tonumber(os.getenv("DIFFILL_TEST_TIMEOUT_MS") or "60000"),
}

vim.opt.runtimepath:prepend(H.env.plugin)

local finished = false

local function finish()
  if finished then
    return
  end
  finished = true
  local f = assert(io.open(H.env.out, "w"))
  f:write(vim.fn.json_encode(H.out))
  f:close()
  vim.cmd("qall!")
end

local co

local function resume(...)
  local ok, err = coroutine.resume(co, ...)
  if not ok then
    H.out.error = tostring(err) .. "\n" .. debug.traceback(co)
    finish()
  elseif coroutine.status(co) == "dead" then
    finish()
  end
end

--- Let the main loop run for `ms` milliseconds.
function H.sleep(ms)
  local me = coroutine.running()
  vim.defer_fn(function()
    if me == co then
      resume()
    end
  end, ms)
  coroutine.yield()
end

--- Wait until `cond()` is truthy; returns its value. Errors (ending the scenario) after `ms`.
function H.wait(what, cond, ms)
  local deadline = vim.loop.now() + (ms or H.env.timeout_ms)
  while true do
    local ok, value = pcall(cond)
    if ok and value then
      return value
    end
    if vim.loop.now() > deadline then
      error(("timed out waiting for %s%s"):format(what, ok and "" or (": " .. tostring(value))), 0)
    end
    H.sleep(25)
  end
end

--- Keys as a user types them (mappings apply), e.g. H.type("ifoo<Esc>").
function H.type(keys)
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), "mt", false)
end

--- Calls `fn(callback)` and waits for the callback; returns its arguments as a list.
function H.await(what, fn, ms)
  local result
  fn(function(...)
    result = { n = select("#", ...), ... }
  end)
  H.wait(what, function()
    return result
  end, ms)
  return result
end

function H.lines(bufnr)
  return vim.api.nvim_buf_get_lines(bufnr or 0, 0, -1, false)
end

--- Every extmark in the "diffill" namespace with the text it draws.
function H.ghost_marks(bufnr)
  local ns = vim.api.nvim_get_namespaces().diffill
  if not ns then
    return {}
  end
  local marks = {}
  for _, mark in ipairs(vim.api.nvim_buf_get_extmarks(bufnr or 0, ns, 0, -1, { details = true })) do
    local details = mark[4] or {}
    local function join(chunks)
      local parts = {}
      for _, chunk in ipairs(chunks or {}) do
        parts[#parts + 1] = chunk[1]
      end
      return table.concat(parts)
    end
    local virt_lines = {}
    for _, chunks in ipairs(details.virt_lines or {}) do
      virt_lines[#virt_lines + 1] = join(chunks)
    end
    marks[#marks + 1] = {
      row = mark[2],
      col = mark[3],
      virt_text = join(details.virt_text),
      virt_text_pos = details.virt_text_pos,
      virt_lines = virt_lines,
    }
  end
  return marks
end

--- Set diffill up with the server command from the test, open the test file, wait until the server
--- says it is ready. Messages shown with vim.notify are kept in H.out.notifications.
function H.start(opts)
  H.out.notifications = {}
  local notify = vim.notify
  vim.notify = function(message, level, ...)
    table.insert(H.out.notifications, { message = tostring(message), level = level or 0 })
    return notify(message, level, ...)
  end
  opts = vim.tbl_extend("force", { cmd = H.env.cmd }, opts or {})
  require("diffill").setup(opts)
  vim.cmd("edit " .. vim.fn.fnameescape(H.env.file))
  local bufnr = vim.api.nvim_get_current_buf()
  local status = require("diffill.status")
  H.wait("the diffill client to attach", function()
    return require("diffill.lsp").client(bufnr)
  end)
  H.wait("the server's ready status", function()
    if status.current.state == "error" then
      error("server reported an error: " .. tostring(status.current.message), 0)
    end
    return status.current.state == "ready"
  end)
  H.out.status = status.current
  return bufnr
end

--- Run `scenario` and quit Neovim when it ends (or when the overall timeout strikes).
function H.run(scenario)
  H.out.nvim_version = tostring(vim.version().major) .. "." .. vim.version().minor .. "." .. vim.version().patch
  co = coroutine.create(scenario)
  vim.defer_fn(function()
    if not finished then
      H.out.error = "scenario timed out after " .. (H.env.timeout_ms * 3) .. " ms"
      finish()
    end
  end, H.env.timeout_ms * 3)
  vim.schedule(resume)
end

return H
