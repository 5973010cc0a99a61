-- Editing settings for eflow: `//` comments, 4-space indentation (as `eflowc fmt`).
vim.bo.commentstring = "// %s"
vim.bo.comments = ":///,://"
vim.bo.expandtab = true
vim.bo.shiftwidth = 4
vim.bo.tabstop = 4
