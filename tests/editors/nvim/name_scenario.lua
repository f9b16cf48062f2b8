-- :DiffillName on a local that shadows a global: either every in-scope occurrence is renamed
-- through workspace/applyEdit, or the server's reason arrives as a notification and the
-- buffer is left as it was.
local H = dofile(os.getenv("DIFFILL_TEST_HARNESS"))

H.run(function()
  local out = H.out
  local bufnr = H.start()
  vim.api.nvim_buf_set_lines(bufnr, 0, -1, false, {
    "count = 10",
    "",
    "",
    "def tally(values):",
    "    count = 0",
    "    for v in values:",
    "        count += v",
    "    return count",
    "",
    "",
    "print(count)",
  })
  out.before = H.lines(bufnr)
  vim.api.nvim_win_set_cursor(0, { 5, 5 }) -- on the local `count`
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  vim.cmd("DiffillName")
  H.wait("a rename or the reason there is none", function()
    return #out.notifications > 0 or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick
  end)
  H.sleep(50)
  out.after = H.lines(bufnr)
end)
