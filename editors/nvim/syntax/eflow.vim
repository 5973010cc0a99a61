" Syntax highlighting for eflow, for when the language server's semantic tokens
" are not available (Neovim before 0.9).
if exists("b:current_syntax")
  finish
endif

syntax keyword eflowKeyword from import as record enum type remote call approval wait step flow bindings
syntax keyword eflowKeyword let when else for in join all any at_least return timeout schedule timezone
syntax keyword eflowKeyword overlap catchup within jitter input retry backoff fixed exponential
syntax keyword eflowKeyword non_retryable after parallel raises deadline repeat at_most until
syntax keyword eflowOperator and or not
syntax keyword eflowConstant true false none
syntax keyword eflowType Bool Int Float String Duration Timestamp List Map
syntax match eflowNumber "\<\d\+\(\.\d\+\)\?\([eE][-+]\?\d\+\)\?\>"
syntax match eflowDuration "\<\(\d\+\(ms\|s\|m\|h\|d\|w\)\)\+\>"
syntax region eflowString start=+"+ skip=+\\\\\|\\"+ end=+"+ oneline
syntax match eflowComment "//.*$"
syntax match eflowDoc "///.*$"

highlight default link eflowKeyword Keyword
highlight default link eflowOperator Operator
highlight default link eflowConstant Constant
highlight default link eflowType Type
highlight default link eflowNumber Number
highlight default link eflowDuration Number
highlight default link eflowString String
highlight default link eflowComment Comment
highlight default link eflowDoc SpecialComment

let b:current_syntax = "eflow"
