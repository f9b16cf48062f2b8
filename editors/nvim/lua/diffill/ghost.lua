-- Ghost text: a suggestion drawn with one extmark in the "diffill" namespace, never in the buffer.
--
-- Inserting `text` at byte column `col` of row `row` (replacing the bytes up to `end_col`) is shown so
-- the line reads as it would after accepting:
--   * Neovim >= 0.10, pure insertion of one line: `virt_text_pos = "inline"` pushes the rest aside.
--   * Otherwise (0.7 has no inline virtual text): an "overlay" at `col` draws the suggestion's first line
--     followed by the line's remaining text, covering the original characters, so nothing is hidden
--     and nothing is drawn twice. Further lines are `virt_lines` below; the last one carries the
--     remaining text, which is where accepting will move it.
local M = {}

M.ns = vim.api.nvim_create_namespace("diffill")
M.hl_group = "DiffillGhost"

local has_inline = vim.fn.has("nvim-0.10") == 1
local marks = {} -- bufnr -> extmark id

function M.define_highlights()
  vim.api.nvim_set_hl(0, M.hl_group, { link = "Comment", default = true })
end

-- Virtual text draws a tab as a control character; show it as the spaces it would take.
local function display(bufnr, s)
  local tabstop = vim.bo[bufnr].tabstop
  return (s:gsub("\t", string.rep(" ", tabstop)))
end

local function pad_to(s, width)
  local have = vim.fn.strdisplaywidth(s)
  return have < width and (s .. string.rep(" ", width - have)) or s
end

function M.clear(bufnr)
  local id = marks[bufnr]
  marks[bufnr] = nil
  if id and vim.api.nvim_buf_is_valid(bufnr) then
    pcall(vim.api.nvim_buf_del_extmark, bufnr, M.ns, id)
  end
end

--- Show `text` as if inserted at (row, col), replacing bytes col..end_col of that row.
---@param bufnr integer
---@param row integer 0-based
---@param col integer byte column
---@param end_col integer byte column >= col
---@param text string
function M.show(bufnr, row, col, end_col, text)
  M.clear(bufnr)
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ""
  col = math.min(col, #line)
  end_col = math.max(col, math.min(end_col, #line))
  local lines = vim.split(text, "\n", { plain = true })
  local covered = display(bufnr, line:sub(col + 1)) -- what the overlay draws over
  local rest = display(bufnr, line:sub(end_col + 1)) -- what stays after the suggestion
  local hl = M.hl_group
  local opts = { hl_mode = "combine", priority = 200 }

  if has_inline and end_col == col and (#lines == 1 or rest == "") then
    opts.virt_text = { { display(bufnr, lines[1]), hl } }
    opts.virt_text_pos = "inline"
    rest = ""
  elseif #lines == 1 then
    opts.virt_text = { { display(bufnr, lines[1]), hl } }
    if rest ~= "" then
      table.insert(opts.virt_text, { rest, "Normal" })
    end
    -- A replacement can be shorter than what it replaces: blank out the leftover.
    local width = vim.fn.strdisplaywidth(display(bufnr, lines[1]) .. rest)
    local cover = vim.fn.strdisplaywidth(covered)
    if width < cover then
      table.insert(opts.virt_text, { string.rep(" ", cover - width), "Normal" })
    end
    opts.virt_text_pos = "overlay"
  else
    opts.virt_text = { { pad_to(display(bufnr, lines[1]), vim.fn.strdisplaywidth(covered)), hl } }
    opts.virt_text_pos = "overlay"
  end

  if #lines > 1 then
    local virt_lines = {}
    for i = 2, #lines do
      virt_lines[#virt_lines + 1] = { { display(bufnr, lines[i]), hl } }
    end
    if rest ~= "" then
      table.insert(virt_lines[#virt_lines], { rest, "Normal" })
    end
    opts.virt_lines = virt_lines
  end
  marks[bufnr] = vim.api.nvim_buf_set_extmark(bufnr, M.ns, row, col, opts)
end

function M.is_shown(bufnr)
  return marks[bufnr] ~= nil
end

--- The extmark's text as drawn: {first = virt_text joined, lines = {virt_lines joined}}; for tests
--- and for statusline-like integrations.
function M.rendered(bufnr)
  local id = marks[bufnr]
  if not id then
    return nil
  end
  local mark = vim.api.nvim_buf_get_extmark_by_id(bufnr, M.ns, id, { details = true })
  local function join(chunks)
    local parts = {}
    for _, chunk in ipairs(chunks or {}) do
      parts[#parts + 1] = chunk[1]
    end
    return table.concat(parts)
  end
  local details = mark[3] or {}
  local lines = {}
  for _, chunks in ipairs(details.virt_lines or {}) do
    lines[#lines + 1] = join(chunks)
  end
  return { row = mark[1], col = mark[2], first = join(details.virt_text), lines = lines }
end

return M
