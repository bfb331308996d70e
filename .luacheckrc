std = "lua54"
max_line_length = 120
codes = true
-- A method need not use self; `_`-prefixed locals are deliberately unused
-- (a `<close>` lock held for its scope).
self = false
ignore = { "21./_.*" }

files["spec/**/*_spec.lua"] = { std = "+busted", max_line_length = false }
