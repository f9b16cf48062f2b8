-- :DiffillSuggest at a hole shows the server's suggestion as ghost text; :DiffillAccept inserts it.
local H = dofile(os.getenv("DIFFILL_TEST_HARNESS"))

H.run(function()
  local diffill = require("diffill")
  local bufnr = H.start()
  local out = H.out
  out.before = H.lines(bufnr)
  -- The hole is at the end of line 2 (`    total = `); normal mode rests on its last character.
  local hole_line = out.before[2]
  vim.api.nvim_win_set_cursor(0, { 2, #hole_line - 1 })
  vim.cmd("DiffillSuggest")
  H.wait("ghost text (or a message saying why not)", function()
    if #out.notifications > 0 then
      error("no ghost text: " .. out.notifications[#out.notifications].message, 0)
    end
    return #H.ghost_marks(bufnr) > 0
  end)
  out.marks = H.ghost_marks(bufnr)
  out.suggestion = diffill.current_suggestion()
  out.suggestion_text = out.suggestion and out.suggestion.text
  vim.cmd("DiffillAccept")
  out.after = H.lines(bufnr)
  out.marks_after = H.ghost_marks(bufnr)
  out.cursor_after = vim.api.nvim_win_get_cursor(0)
end)
