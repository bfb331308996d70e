std = "lua54"
max_line_length = 120
codes = true

files["spec/**/*_spec.lua"] = { std = "+busted" }
