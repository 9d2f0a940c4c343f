-- Tests for lua/hookd/patterns.lua, the pattern matcher the CPU guard can
-- stop: it must answer exactly as the library's own matcher does. Fixed
-- cases cover each feature; then many random subjects and patterns are
-- run through both, comparing results (or that both refuse a pattern).

-- The library's own functions, kept before anything replaces them.
local native = {
  find = string.find, match = string.match, gmatch = string.gmatch,
  gsub = string.gsub,
}
local testing = require "testing"
local patterns = require "hookd.patterns"

local check, eq = testing.check, testing.eq

local function pack(...) return { n = select("#", ...), ... } end

local function show(t)
  local parts = {}
  for i = 1, t.n do parts[i] = tostring(t[i]) end
  return t.ok == false and "error" or "(" .. table.concat(parts, ", ") .. ")"
end

local function run(fn, ...)
  local r = pack(pcall(fn, ...))
  local ok = table.remove(r, 1)
  r.n = r.n - 1
  r.ok = ok
  if not ok then r.n = 0 end
  return r
end

local function all_matches(gmatch, s, p)
  local out = {}
  for a, b in gmatch(s, p) do
    out[#out + 1] = tostring(a) .. "|" .. tostring(b)
    if #out > 100 then break end
  end
  return table.concat(out, ";")
end

-- Compares one call of both; returns nil or a description of the
-- difference.
local function differs(name, s, p, x)
  local a, b
  if name == "gmatch" then
    a = run(all_matches, native.gmatch, s, p)
    b = run(all_matches, patterns.gmatch, s, p)
  else
    a = run(native[name], s, p, x)
    b = run(patterns[name], s, p, x)
  end
  if show(a) ~= show(b) then
    return string.format("%s(%q, %q, %s): library %s, ours %s", name, s, p,
      tostring(x), show(a), show(b))
  end
  return nil
end

local CASES = {
  { "hello world", "o w" }, { "hello", "l+" }, { "hello", "l*" },
  { "hello", "l-o" }, { "hello", "x?h" }, { "hello", "^h" },
  { "hello", "o$" }, { "hello", "^$" }, { "", "^$" }, { "", ".-" },
  { "key=value", "(%w+)=(%w+)" }, { "key=value", "()=()" },
  { "a(b(c)d)e", "%b()" }, { "THE (quick) fox", "%f[%a]%a+" },
  { "abcabc", "(abc)%1" }, { "x = 1, y = 22", "(%a)%s*=%s*(%d+)" },
  { "[brackets]", "[%[%]]" }, { "a-b-c", "[a-]+" }, { "a]b", "[]]" },
  { "tab\there", "%s" }, { "Ünïcode", "%a+" }, { "1.5e3", "^[%d.e]+$" },
  { "aaa", "a-b" }, { "ab", "(a)(b)()" }, { "x", "%" }, { "x", "[a" },
  { "x", "(x" }, { "x", "x)" }, { "x", "%1" }, { "x", "%bx" },
  { "utm_source=mail&utm_medium=x", "utm_(%w+)=([^&]*)" },
}

check("patterns_fixed_cases_answer_like_the_library", function()
  for _, c in ipairs(CASES) do
    for _, name in ipairs({ "find", "match", "gmatch" }) do
      local d = differs(name, c[1], c[2], nil)
      if d then error(d, 0) end
    end
    for _, init in ipairs({ 2, -2, 0, 100 }) do
      local d = differs("find", c[1], c[2], init)
      if d then error(d, 0) end
    end
  end
end)

check("patterns_gsub_replacements_answer_like_the_library", function()
  local repls = {
    "<%0>", "%2=%1", "%%", "x", 7, { hello = "HI", world = false },
    function(a) if a == "o" then return nil end return a:upper() end,
  }
  for _, c in ipairs(CASES) do
    for _, r in ipairs(repls) do
      for _, n in ipairs({ nil, 1 }) do
        local a = run(native.gsub, c[1], c[2], r, n)
        local b = run(patterns.gsub, c[1], c[2], r, n)
        if show(a) ~= show(b) then
          error(string.format("gsub(%q, %q, %s): library %s, ours %s",
            c[1], c[2], tostring(r), show(a), show(b)), 0)
        end
      end
    end
  end
end)

-- A small generator, so that failures can be reproduced from the seed.
local seed = 12345
local function rand(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed % n + 1
end

local SUBJECT = { "a", "b", "(", ")", " ", "1", "-", ".", "%", "]" }
local PIECES = {
  ".", "a", "b", "%a", "%d", "%s", "[ab]", "[^a]", "[a-c]", "(", ")",
  "*", "+", "-", "?", "%b()", "%f[%a]", "^", "$", "%1", "()", "%.",
}

check("patterns_random_cases_answer_like_the_library", function()
  for _ = 1, 3000 do
    local s, p = {}, {}
    for i = 1, rand(10) - 1 do s[i] = SUBJECT[rand(#SUBJECT)] end
    for i = 1, rand(6) do p[i] = PIECES[rand(#PIECES)] end
    s, p = table.concat(s), table.concat(p)
    for _, name in ipairs({ "find", "match", "gmatch", "gsub" }) do
      local d = differs(name, s, p, name == "gsub" and "<%0>" or nil)
      if d then error(d, 0) end
    end
  end
end)

check("patterns_plain_find_answers_like_the_library", function()
  local cases = {
    { "hello", "ll" }, { "hello", "" }, { "", "" }, { "aaab", "aab" },
    { "a.b", "." }, { "x", "xx" }, { "abc", "c" },
  }
  for _, c in ipairs(cases) do
    for _, init in ipairs({ 1, 2, -1, 0, 10 }) do
      local a = pack(native.find(c[1], c[2], init, true))
      local b = pack(patterns.find_plain(c[1], c[2], init))
      if show(a) ~= show(b) then
        error(string.format("find(%q, %q, %d, true): library %s, ours %s",
          c[1], c[2], init, show(a), show(b)), 0)
      end
    end
  end
end)

check("patterns_a_costly_match_is_still_correct", function()
  local s = ("a"):rep(40) .. "b"
  eq(patterns.find(s, ".-.-.-b"), 1, "found")
  eq(select(2, patterns.find(s, ".-.-.-b")), 41, "end")
  eq(patterns.find(("a"):rep(20), ".-.-.-b"), nil, "absent")
end)
