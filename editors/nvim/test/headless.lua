-- Headless Neovim end-to-end test of eflow-lsp (run by lsp/tests/nvim.rs):
-- open a file with a mistake, receive the pushed diagnostics, ask for hover and
-- completion, and check the answers. Writes what it saw to $EFLOW_OUT and exits
-- 0 when every check passed, 1 otherwise.

local out = {}
local failed = false
local function check(name, ok, detail)
  table.insert(out, (ok and "ok " or "FAIL ") .. name .. (detail and (": " .. detail) or ""))
  if not ok then
    failed = true
  end
end

local function finish()
  local f = io.open(os.getenv("EFLOW_OUT"), "w")
  f:write(table.concat(out, "\n") .. "\n")
  f:close()
  vim.cmd(failed and "cquit 1" or "qall!")
end

local ok, err = pcall(function()
  vim.opt.runtimepath:prepend(os.getenv("EFLOW_NVIM_PLUGIN"))
  vim.cmd("filetype plugin on")
  require("eflow").setup({ cmd = { os.getenv("EFLOW_LSP") }, init_options = { diagnosticsDelayMs = 0 } })
  vim.cmd("edit " .. vim.fn.fnameescape(os.getenv("EFLOW_FILE")))
  check("filetype", vim.bo.filetype == "eflow", vim.bo.filetype)

  local attached = vim.wait(10000, function()
    return #vim.lsp.buf_get_clients(0) > 0
  end, 20)
  check("client attached", attached)

  -- Pushed diagnostics: the file misspells `spec`.
  local got = vim.wait(10000, function()
    return #vim.diagnostic.get(0) > 0
  end, 20)
  local diags = vim.diagnostic.get(0)
  local codes = {}
  for _, d in ipairs(diags) do
    table.insert(codes, tostring(d.code))
  end
  check("diagnostics", got and vim.tbl_contains(codes, "E0100"), table.concat(codes, ","))

  local function position_of(pattern, delta)
    local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
    for i, line in ipairs(lines) do
      local col = line:find(pattern, 1, true)
      if col then
        return { line = i - 1, character = col - 1 + (delta or 0) }
      end
    end
  end

  local uri = vim.uri_from_bufnr(0)
  local hover = vim.lsp.buf_request_sync(0, "textDocument/hover", {
    textDocument = { uri = uri },
    position = position_of("let model", 5),
  }, 10000)
  local text = ""
  for _, r in pairs(hover or {}) do
    if r.result and r.result.contents then
      text = text .. (r.result.contents.value or "")
    end
  end
  check("hover", text:find("let model: Model", 1, true) ~= nil, text:sub(1, 80))

  local completion = vim.lsp.buf_request_sync(0, "textDocument/completion", {
    textDocument = { uri = uri },
    position = position_of("data: features.holdout", #"data: features."),
  }, 10000)
  local labels = {}
  for _, r in pairs(completion or {}) do
    local items = r.result and (r.result.items or r.result) or {}
    for _, item in ipairs(items) do
      table.insert(labels, item.label)
    end
  end
  check("completion", vim.tbl_contains(labels, "holdout") and vim.tbl_contains(labels, "label"), table.concat(labels, ","))
end)
if not ok then
  check("script", false, tostring(err))
end
finish()
