-- The server's state as told by its `diffill/status` notifications (and the diffill.status command).
local M = {}

M.current = { state = "starting", model = "", isRandom = false }

--- Merge a status payload and tell listeners (`autocmd User DiffillStatus`).
function M.update(params)
  if type(params) ~= "table" then
    return
  end
  M.current = vim.tbl_extend("force", M.current, params)
  vim.schedule(function()
    vim.api.nvim_exec_autocmds("User", { pattern = "DiffillStatus", modeline = false })
  end)
end

--- Short text for a statusline: `diffill: ready (model)`, with a warning for random weights.
function M.statusline()
  local s = M.current
  -- The server may append its own bracketed note to the name; the label below says it shorter.
  local name = tostring(s.model or ""):gsub("%s*%b[]%s*$", "")
  local model = name ~= "" and (" (" .. vim.fn.fnamemodify(name, ":t") .. ")") or ""
  local random = s.isRandom and " [random weights]" or ""
  return ("diffill: %s%s%s"):format(s.state, model, random)
end

return M
