-- Ghost text rendering and the accept / accept-line / dismiss keys, with suggestions presented
-- directly (no server): what a user sees and what the keys insert must not depend on a model.
local H = dofile(os.getenv("DIFFILL_TEST_HARNESS"))

H.run(function()
  local diffill = require("diffill")
  local suggest = require("diffill.suggest")
  -- No filetype matches, so no server starts: this scenario is about drawing and inserting.
  diffill.setup({ cmd = { "diffill-not-started" }, filetypes = { "diffill-none" } })
  vim.bo.expandtab = false
  local buf = vim.api.nvim_get_current_buf()
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "def f(x):", "    return x", "y = f(1)  # tail" })
  local out = H.out

  -- 1. One line in the middle of a line.
  vim.api.nvim_win_set_cursor(0, { 3, 4 })
  suggest.present(buf, { row = 2, col = 4, text = "g(0) + " })
  out.single = H.ghost_marks(buf)
  vim.cmd("DiffillAccept")
  out.single_accepted = H.lines(buf)
  out.single_marks_after = #H.ghost_marks(buf)
  out.single_cursor = vim.api.nvim_win_get_cursor(0)

  -- 2. Several lines in the middle of a line: the line's tail moves to the last suggested line.
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "def f(x):", "    return x", "y = f(1)  # tail" })
  vim.api.nvim_win_set_cursor(0, { 3, 4 })
  suggest.present(buf, { row = 2, col = 4, text = "g(0)\nz = " })
  out.multi = H.ghost_marks(buf)
  vim.cmd("DiffillAccept")
  out.multi_accepted = H.lines(buf)

  -- 3. Insert mode at the end of a line: accept-line key, then dismiss key.
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "def f(x):", "    return x", "" })
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  H.type("A")
  H.wait("insert mode", function()
    return vim.api.nvim_get_mode().mode == "i"
  end, 2000)
  local cursor = vim.api.nvim_win_get_cursor(0)
  out.insert_cursor = cursor
  suggest.present(buf, { row = cursor[1] - 1, col = cursor[2], text = " + 1\n    print(x)\n    return x" })
  out.eol = H.ghost_marks(buf)
  H.type("<M-l>")
  H.wait("accept-line to insert", function()
    return H.lines(buf)[2] == "    return x + 1"
  end, 2000)
  H.sleep(50)
  out.after_accept_line = H.lines(buf)
  out.after_accept_line_marks = H.ghost_marks(buf)
  out.after_accept_line_cursor = vim.api.nvim_win_get_cursor(0)
  H.type("<C-]>")
  H.wait("dismiss", function()
    return #H.ghost_marks(buf) == 0
  end, 2000)
  out.after_dismiss = H.lines(buf)

  -- 4. With no suggestion shown, the keys keep their own meaning (Tab inserts a tab).
  H.type("<Tab>x<Esc>")
  H.wait("normal mode", function()
    return vim.api.nvim_get_mode().mode == "n"
  end, 2000)
  out.fallback_line = vim.api.nvim_buf_get_lines(buf, 2, 3, false)[1]

  -- 5. Tab accepts everything; the cursor ends after the inserted text.
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "xs = [", "]" })
  vim.api.nvim_win_set_cursor(0, { 1, 5 })
  H.type("A")
  H.wait("insert mode", function()
    return vim.api.nvim_get_mode().mode == "i"
  end, 2000)
  suggest.present(buf, { row = 0, col = 6, text = "1, 2,\n    3" })
  H.type("<Tab>")
  H.wait("tab accept", function()
    return #H.lines(buf) == 3
  end, 2000)
  out.tab_accepted = H.lines(buf)
  out.tab_cursor = vim.api.nvim_win_get_cursor(0)
  H.type("<Esc>")

  -- 6. Moving the cursor away hides the suggestion.
  vim.api.nvim_win_set_cursor(0, { 1, 0 })
  suggest.present(buf, { row = 0, col = 0, text = "# note\n" })
  out.before_move = #H.ghost_marks(buf)
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  H.sleep(50)
  out.after_move = #H.ghost_marks(buf)
  out.accept_without_suggestion = diffill.accept()

  -- 7. The user commands exist on this version.
  local commands = vim.api.nvim_get_commands({})
  out.commands = {}
  for _, name in ipairs({ "DiffillSuggest", "DiffillAccept", "DiffillAcceptLine", "DiffillDismiss", "DiffillRewrite", "DiffillFill", "DiffillRepair", "DiffillName", "DiffillToggle", "DiffillStatus" }) do
    out.commands[name] = commands[name] ~= nil
  end
end)
