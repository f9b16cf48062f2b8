-- :DiffillFill replaces a `pass` body with the server's code, through workspace/applyEdit.
local H = dofile(os.getenv("DIFFILL_TEST_HARNESS"))

H.run(function()
  local out = H.out
  local bufnr = H.start()
  vim.api.nvim_buf_set_lines(bufnr, -1, -1, false, { "", "", "def add(a, b):", "    pass" })
  out.before = H.lines(bufnr)
  local row = #out.before
  vim.api.nvim_win_set_cursor(0, { row, 4 })
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  vim.cmd("DiffillFill")
  H.wait("the body to be filled", function()
    if #out.notifications > 0 then
      error("fill failed: " .. out.notifications[#out.notifications].message, 0)
    end
    return vim.api.nvim_buf_get_changedtick(bufnr) ~= tick
  end)
  H.sleep(50)
  out.after = H.lines(bufnr)
  out.marks = H.ghost_marks(bufnr)
end)
