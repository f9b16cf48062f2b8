-- Ghost text while typing in insert mode: a burst of keys makes one debounced request, a newer
-- request cancels the one in flight, typing the suggestion's own characters keeps it, the
-- accept-line key inserts one line, and leaving insert mode hides what is left.
local H = dofile(os.getenv("DIFFILL_TEST_HARNESS"))

local DEBOUNCE_MS = 500

H.run(function()
  local out = H.out
  local suggest = require("diffill.suggest")
  local bufnr = H.start({ settings = { debounceMs = DEBOUNCE_MS, maxHoleTokens = 8 } })
  local ns = vim.api.nvim_get_namespaces().diffill

  -- Type three characters at the end of `    total = `, faster than the debounce.
  vim.api.nvim_win_set_cursor(0, { 2, 0 })
  H.type("A")
  H.wait("insert mode", function()
    return vim.api.nvim_get_mode().mode == "i"
  end, 2000)
  local requests_before = suggest.stats.requests
  for _, key in ipairs({ "s", "u", "m" }) do
    H.type(key)
    H.sleep(30)
  end
  out.requests_during_burst = suggest.stats.requests - requests_before
  H.wait("a debounced request", function()
    return suggest.stats.requests > requests_before
  end)
  H.wait("ghost text after typing", function()
    return #H.ghost_marks(bufnr) > 0
  end)
  -- Nothing typed since: no second request may follow the first.
  H.sleep(DEBOUNCE_MS + 100)
  out.requests_after_burst = suggest.stats.requests - requests_before
  out.line_typed = vim.api.nvim_buf_get_lines(bufnr, 1, 2, false)[1]
  out.first_suggestion = suggest.current(bufnr).text
  out.first_marks = H.ghost_marks(bufnr)

  -- Typing the suggestion's next character keeps the rest on screen, without asking again.
  local next_char = out.first_suggestion:sub(1, 1)
  out.typed_through = next_char
  local requests = suggest.stats.requests
  if next_char ~= "" and next_char ~= "\n" and #out.first_suggestion > 1 then
    H.type(next_char)
    H.wait("the typed character", function()
      return vim.api.nvim_buf_get_lines(bufnr, 1, 2, false)[1] == out.line_typed .. next_char
    end, 2000)
    H.sleep(DEBOUNCE_MS + 100)
    out.after_type_through = suggest.current(bufnr) and suggest.current(bufnr).text
    out.requests_after_type_through = suggest.stats.requests - requests
  end

  -- A new request while one is in flight cancels it; only the newer answer is shown.
  local cancelled, discarded = suggest.stats.cancelled, suggest.stats.discarded
  suggest.request(bufnr, "invoked")
  local answered = false
  suggest.request(bufnr, "invoked", function()
    answered = true
  end)
  out.cancelled = suggest.stats.cancelled - cancelled
  H.wait("the second request's answer", function()
    return answered
  end)
  -- The server answers the cancelled request too (with an error or a late result): ignored.
  H.wait("the cancelled request's answer to be discarded", function()
    return suggest.stats.discarded > discarded
  end)
  out.discarded = suggest.stats.discarded - discarded
  out.marks_after_cancel = #vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, {})

  -- Accept one line with the key; the line holds what was typed plus the suggestion's first line.
  local s = suggest.current(bufnr)
  out.before_accept_line = vim.api.nvim_buf_get_lines(bufnr, 1, 2, false)[1]
  out.suggestion_before_accept_line = s and s.text
  H.type("<M-l>")
  H.wait("accept-line", function()
    return vim.api.nvim_buf_get_lines(bufnr, 1, 2, false)[1] ~= out.before_accept_line
  end, 5000)
  out.after_accept_line = H.lines(bufnr)

  -- Leaving insert mode hides whatever is left.
  H.type("<Esc>")
  H.wait("normal mode", function()
    return vim.api.nvim_get_mode().mode == "n"
  end, 2000)
  H.sleep(50)
  out.marks_after_esc = #H.ghost_marks(bufnr)
end)
