-- Default client config for Neovim >= 0.11: `vim.lsp.enable("diffill")` reads this file from the
-- runtimepath. require("diffill").setup() layers the user's options over it with vim.lsp.config().
return {
  cmd = { "diffill", "serve" },
  filetypes = { "python", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "rust" },
  root_markers = { ".git", "pyproject.toml", "setup.py", "package.json", "go.mod", "Cargo.toml" },
  handlers = {
    ["diffill/status"] = function(_, params)
      require("diffill.status").update(params)
    end,
  },
}
