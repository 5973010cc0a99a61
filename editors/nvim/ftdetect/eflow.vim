" .eflow files are eflow flows.
autocmd BufRead,BufNewFile *.eflow setfiletype eflow
