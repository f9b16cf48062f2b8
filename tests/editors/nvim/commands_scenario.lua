-- :'<,'>DiffillRewrite on a visual selection, :DiffillRepair, :DiffillToggle and :DiffillStatus
-- against the real server. Every workspace/applyEdit the server sends is recorded (and still
-- applied by Neovim's own handler) so the test can check that only the edited span changed.
local H = dofile(os.getenv("DIFFILL_TEST_HARNESS"))

H.run(function()
  local out = H.out
  out.applied = {}
  local builtin = vim.lsp.handlers["workspace/applyEdit"]
  vim.lsp.handlers["workspace/applyEdit"] = function(err, params, ctx, config)
    table.insert(out.applied, params)
    return builtin(err, params, ctx, config)
  end
  local bufnr = H.start({ settings = { maxHoleTokens = 8 } })
  local function edited_after(count, what)
    H.wait(what, function()
      if #out.notifications > 0 then
        error(what .. " failed: " .. out.notifications[#out.notifications].message, 0)
      end
      return #out.applied >= count
    end)
    H.sleep(50)
  end

  -- Rewrite: select `"Hello, " + n` (charwise) on the line `    message = "Hello, " + name`.
  out.before_rewrite = H.lines(bufnr)
  local row = vim.fn.search('message = "Hello', "n")
  out.rewrite_row = row
  vim.api.nvim_win_set_cursor(0, { row, 0 })
  H.type('0f"vf+2l')
  H.wait("visual mode", function()
    return vim.api.nvim_get_mode().mode == "v"
  end, 2000)
  H.type(":DiffillRewrite<CR>")
  edited_after(1, "rewrite")
  out.selection = { vim.api.nvim_buf_get_mark(bufnr, "<"), vim.api.nvim_buf_get_mark(bufnr, ">") }
  out.after_rewrite = H.lines(bufnr)

  -- Repair the line `        total += v` (no range: the cursor's line).
  out.before_repair = H.lines(bufnr)
  local repair_row = vim.fn.search("total += v", "n")
  out.repair_row = repair_row
  vim.api.nvim_win_set_cursor(0, { repair_row, 0 })
  vim.cmd("DiffillRepair")
  edited_after(2, "repair")
  out.after_repair = H.lines(bufnr)

  -- Toggle off: the server says so, and a suggestion request gets nothing.
  vim.cmd("DiffillToggle off")
  H.wait("disabled status", function()
    return require("diffill.status").current.state == "disabled"
  end)
  local notified = #out.notifications
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  vim.cmd("DiffillSuggest")
  H.wait("the answer to a request while disabled", function()
    for i = notified + 1, #out.notifications do
      if out.notifications[i].message:find("no suggestion", 1, true) then
        return true
      end
    end
    return false
  end)
  out.marks_while_disabled = #H.ghost_marks(bufnr)
  vim.cmd("DiffillToggle on")
  H.wait("enabled status", function()
    return require("diffill.status").current.state == "ready"
  end)
  notified = #out.notifications
  vim.cmd("DiffillStatus")
  H.wait("status message", function()
    return #out.notifications > notified
  end)
  out.status_message = out.notifications[#out.notifications].message
  out.statusline = require("diffill").statusline()
end)
