-- eflow for Neovim's built-in LSP client: `.eflow` files get the eflow-lsp
-- language server (diagnostics, hover, completion, go to definition, rename, …).
--
--   require("eflow").setup()                        -- eflow-lsp on $PATH
--   require("eflow").setup({ cmd = { "/path/to/eflow-lsp" } })
--
-- Works with Neovim 0.7 and later: it uses vim.lsp.start_client and attaches
-- each eflow buffer itself, so it needs neither nvim-lspconfig nor vim.lsp.start.

local M = {}

local defaults = {
  cmd = { "eflow-lsp" },
  -- Files whose presence marks the workspace root, searched upwards.
  root_markers = { ".git", "Cargo.toml" },
  -- Passed to the server as initializationOptions.
  init_options = { diagnosticsDelayMs = 150 },
  on_attach = nil,
  capabilities = nil,
}

local function find_root(path, markers)
  local dir = vim.fn.fnamemodify(path, ":p:h")
  local home = vim.loop.os_homedir()
  while dir and dir ~= "" and dir ~= "/" and dir ~= home do
    for _, m in ipairs(markers) do
      if vim.loop.fs_stat(dir .. "/" .. m) then
        return dir
      end
    end
    local parent = vim.fn.fnamemodify(dir, ":h")
    if parent == dir then
      break
    end
    dir = parent
  end
  return vim.fn.fnamemodify(path, ":p:h")
end

-- One client per workspace root.
local clients = {}

local function attach(opts, bufnr)
  local name = vim.api.nvim_buf_get_name(bufnr)
  local root = find_root(name ~= "" and name or vim.fn.getcwd(), opts.root_markers)
  local id = clients[root]
  if id == nil or vim.lsp.get_client_by_id(id) == nil then
    id = vim.lsp.start_client({
      name = "eflow-lsp",
      cmd = opts.cmd,
      root_dir = root,
      workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
      init_options = opts.init_options,
      capabilities = opts.capabilities or vim.lsp.protocol.make_client_capabilities(),
      on_attach = opts.on_attach,
    })
    if id == nil then
      vim.notify("eflow: could not start " .. table.concat(opts.cmd, " "), vim.log.levels.ERROR)
      return
    end
    clients[root] = id
  end
  vim.lsp.buf_attach_client(bufnr, id)
end

function M.setup(user)
  local opts = vim.tbl_deep_extend("force", defaults, user or {})
  if vim.filetype and vim.filetype.add then
    vim.filetype.add({ extension = { eflow = "eflow" } })
  end
  local group = vim.api.nvim_create_augroup("eflow_lsp", { clear = true })
  -- Neovim 0.7 uses vim.filetype.add only with g:do_filetype_lua set, and the
  -- plugin's ftdetect is read only if it was on the runtimepath at startup.
  vim.api.nvim_create_autocmd({ "BufRead", "BufNewFile" }, {
    group = group,
    pattern = "*.eflow",
    callback = function(args)
      if vim.bo[args.buf].filetype ~= "eflow" then
        vim.bo[args.buf].filetype = "eflow"
      end
    end,
  })
  vim.api.nvim_create_autocmd("FileType", {
    group = group,
    pattern = "eflow",
    callback = function(args)
      attach(opts, args.buf)
    end,
  })
  -- Buffers already open when setup runs.
  for _, buf in ipairs(vim.api.nvim_list_bufs()) do
    if vim.api.nvim_buf_is_loaded(buf) and vim.bo[buf].filetype == "eflow" then
      attach(opts, buf)
    end
  end
end

return M
