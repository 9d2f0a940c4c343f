-- Lua patterns (string.find, match, gmatch, gsub) implemented in Lua, for
-- the calls whose cost could explode. The library's own matcher is C code:
-- once it starts, nothing can stop it, and a pattern such as
-- ".-.-.-.-b" over a few hundred bytes backtracks for hours. This matcher
-- gives the same answers, and because the sandbox loads it as if it were
-- hook code (interpreted, under the count hook; see sandbox.lua), the CPU
-- guard stops it like any loop of the hook's own.
--
-- The semantics are those of Lua 5.1: character classes in the C locale,
-- sets, the quantifiers * + - ?, captures and position captures, %b, %f
-- and back references.

local byte, sub, char = string.byte, string.sub, string.char
local plain_find = string.find -- the library's, for patterns without magic
local concat, tostring, type, error = table.concat, tostring, type, error
local tonumber = tonumber

local M = {}

local PCT, LBR, RBR, CARET, DOLLAR = 37, 91, 93, 94, 36
local LPAR, RPAR, DOT, MINUS = 40, 41, 46, 45
local STAR, PLUS, QUEST = 42, 43, 63
local UNFINISHED, POSITION = -1, -2
local MAX_CAPTURES = 32

-- The state of one match: the subject, the pattern and the captures.
local src, slen, pat, plen, level
local cap_init, cap_len = {}, {}

local function in_range(c, lo, hi) return c >= lo and c <= hi end

local CLASS = {
  [97] = function(c) return in_range(c, 65, 90) or in_range(c, 97, 122) end,
  [100] = function(c) return in_range(c, 48, 57) end,
  [108] = function(c) return in_range(c, 97, 122) end,
  [115] = function(c) return c == 32 or in_range(c, 9, 13) end,
  [117] = function(c) return in_range(c, 65, 90) end,
  [99] = function(c) return c < 32 or c == 127 end,
  [122] = function(c) return c == 0 end,
}
CLASS[119] = function(c) return CLASS[97](c) or CLASS[100](c) end
CLASS[120] = function(c)
  return CLASS[100](c) or in_range(c, 65, 70) or in_range(c, 97, 102)
end
CLASS[112] = function(c)
  return in_range(c, 33, 47) or in_range(c, 58, 64) or
    in_range(c, 91, 96) or in_range(c, 123, 126)
end

-- Whether byte c is in class cl (the letter after %): a letter names a
-- class (upper case: its complement); anything else stands for itself.
local function match_class(c, cl)
  local test = CLASS[cl]
  if test then return test(c) end
  local lower = cl + 32
  test = in_range(cl, 65, 90) and CLASS[lower]
  if test then return not test(c) end
  return cl == c
end

-- The index just after the single-character class starting at p.
local function class_end(p)
  local c = byte(pat, p)
  p = p + 1
  if c == PCT then
    if p > plen then error("malformed pattern (ends with '%')", 0) end
    return p + 1
  end
  if c == LBR then
    if byte(pat, p) == CARET then p = p + 1 end
    repeat -- the first character of a set may be ']' and is literal
      if p > plen then error("malformed pattern (missing ']')", 0) end
      c = byte(pat, p)
      p = p + 1
      if c == PCT then p = p + 1 end
    until byte(pat, p) == RBR
    return p + 1
  end
  return p
end

-- Whether c is in the set [ ... ] spanning p (at '[') to ec (at ']').
local function match_set(c, p, ec)
  local yes = true
  if byte(pat, p + 1) == CARET then
    yes = false
    p = p + 1
  end
  p = p + 1
  while p < ec do
    local pc = byte(pat, p)
    if pc == PCT then
      p = p + 1
      if match_class(c, byte(pat, p)) then return yes end
    elseif byte(pat, p + 1) == MINUS and p + 2 < ec then
      if pc <= c and c <= byte(pat, p + 2) then return yes end
      p = p + 2
    elseif pc == c then
      return yes
    end
    p = p + 1
  end
  return not yes
end

-- Whether the subject's byte at s matches the class from p to ep.
local function single_match(s, p, ep)
  if s > slen then return false end
  local c, pc = byte(src, s), byte(pat, p)
  if pc == DOT then return true end
  if pc == PCT then return match_class(c, byte(pat, p + 1)) end
  if pc == LBR then return match_set(c, p, ep - 1) end
  return pc == c
end

local do_match

local function max_expand(s, p, ep)
  local i = 0
  while single_match(s + i, p, ep) do i = i + 1 end
  while i >= 0 do
    local e = do_match(s + i, ep + 1)
    if e then return e end
    i = i - 1
  end
  return nil
end

local function min_expand(s, p, ep)
  while true do
    local e = do_match(s, ep + 1)
    if e then return e end
    if not single_match(s, p, ep) then return nil end
    s = s + 1
  end
end

local function start_capture(s, p, what)
  if level >= MAX_CAPTURES then error("too many captures", 0) end
  level = level + 1
  cap_init[level], cap_len[level] = s, what
  local e = do_match(s, p)
  if not e then level = level - 1 end
  return e
end

local function end_capture(s, p)
  local l = level
  while l > 0 and cap_len[l] ~= UNFINISHED do l = l - 1 end
  if l == 0 then error("invalid pattern capture", 0) end
  cap_len[l] = s - cap_init[l]
  local e = do_match(s, p)
  if not e then cap_len[l] = UNFINISHED end
  return e
end

local function match_balance(s, p)
  if p + 1 > plen then error("unbalanced pattern", 0) end
  local open, close = byte(pat, p), byte(pat, p + 1)
  if s > slen or byte(src, s) ~= open then return nil end
  local depth = 1
  for i = s + 1, slen do
    local c = byte(src, i)
    if c == close then
      depth = depth - 1
      if depth == 0 then return i + 1 end
    elseif c == open then
      depth = depth + 1
    end
  end
  return nil
end

local function capture_index(d)
  local l = d - 48
  if l < 1 or l > level or cap_len[l] == UNFINISHED then
    error("invalid capture index", 0)
  end
  return l
end

-- What follows a '%' that is not a class: %b, %f or a back reference.
-- Returns the new (s, p) to go on with, or nil when it does not match.
local function match_escape(s, p)
  local e = byte(pat, p + 1)
  if e == 98 then -- %bxy
    s = match_balance(s, p + 2)
    return s, s and p + 4
  elseif e == 102 then -- %f[set]
    p = p + 2
    if byte(pat, p) ~= LBR then
      error("missing '[' after '%f' in pattern", 0)
    end
    local ep = class_end(p)
    local prev = s == 1 and 0 or byte(src, s - 1)
    local cur = s <= slen and byte(src, s) or 0
    if not match_set(prev, p, ep - 1) and match_set(cur, p, ep - 1) then
      return s, ep
    end
    return nil
  end
  local l = capture_index(e)
  local len = cap_len[l]
  local init = cap_init[l]
  if slen - s + 1 >= len and sub(src, init, init + len - 1) ==
      sub(src, s, s + len - 1) then
    return s + len, p + 2
  end
  return nil
end

local function is_special_escape(p)
  local e = byte(pat, p + 1)
  return e == 98 or e == 102 or (e and in_range(e, 48, 57))
end

-- Matches the pattern from p against the subject from s. Returns the
-- index just after the match, or nil.
do_match = function(s, p)
  while true do
    if p > plen then return s end
    local c = byte(pat, p)
    if c == LPAR then
      if byte(pat, p + 1) == RPAR then
        return start_capture(s, p + 2, POSITION)
      end
      return start_capture(s, p + 1, UNFINISHED)
    elseif c == RPAR then
      return end_capture(s, p + 1)
    elseif c == DOLLAR and p == plen then
      return s == slen + 1 and s or nil
    elseif c == PCT and is_special_escape(p) then
      s, p = match_escape(s, p)
      if not s then return nil end
    else
      local ep = class_end(p)
      local q = byte(pat, ep)
      local m = single_match(s, p, ep)
      if q == QUEST then
        if m then
          local e = do_match(s + 1, ep + 1)
          if e then return e end
        end
        p = ep + 1
      elseif q == STAR then
        return max_expand(s, p, ep)
      elseif q == PLUS then
        return m and max_expand(s + 1, p, ep) or nil
      elseif q == MINUS then
        return min_expand(s, p, ep)
      else
        if not m then return nil end
        s, p = s + 1, ep
      end
    end
  end
end

-- Capture i of a match from s to e (exclusive): a string, or a position.
local function capture(i, s, e)
  if i > level then
    if i == 1 then return sub(src, s, e - 1) end
    error("invalid capture index", 0)
  end
  local len = cap_len[i]
  if len == UNFINISHED then error("unfinished capture", 0) end
  if len == POSITION then return cap_init[i] end
  return sub(src, cap_init[i], cap_init[i] + len - 1)
end

local function captures(s, e, whole)
  local n = (level == 0 and whole) and 1 or level
  local out = {}
  for i = 1, n do out[i] = capture(i, s, e) end
  return out, n
end

local function begin(s, p)
  if type(s) == "number" then s = tostring(s) end
  if type(p) == "number" then p = tostring(p) end
  if type(s) ~= "string" then error("bad argument #1 (string expected)", 0) end
  if type(p) ~= "string" then error("bad argument #2 (string expected)", 0) end
  src, slen, pat, plen = s, #s, p, #p
end

local function start_index(init)
  init = tonumber(init) or 1
  if init < 0 then init = slen + init + 1 end
  if init < 1 then init = 1 end
  return init
end

-- string.find (find true) or string.match (find false). As in the
-- library, find treats a pattern without magic characters as plain text.
local function find_aux(s, p, init, find)
  begin(s, p)
  if find and not plain_find(pat, "[%^%$%*%+%?%.%(%[%%%-]") then
    return M.find_plain(s, p, init)
  end
  local i = start_index(init)
  if i > slen + 1 then i = slen + 1 end -- past the end: at the end
  local pstart, anchor = 1, byte(pat, 1) == CARET
  if anchor then pstart = 2 end
  repeat
    level = 0
    local e = do_match(i, pstart)
    if e then
      local caps, n = captures(i, e, not find)
      if find then return i, e - 1, unpack(caps, 1, level) end
      return unpack(caps, 1, n)
    end
    i = i + 1
  until anchor or i > slen + 1
  return nil
end

function M.find(s, p, init) return find_aux(s, p, init, true) end

-- string.find(s, p, init, true): a search for the text p, which the
-- library does in C in time |s| x |p| at worst.
function M.find_plain(s, p, init)
  begin(s, p)
  local i = start_index(init)
  if i > slen + 1 then i = slen + 1 end
  local first = byte(pat, 1)
  for at = i, slen - plen + 1 do
    if plen == 0 then return at, at - 1 end
    if byte(src, at) == first and sub(src, at, at + plen - 1) == pat then
      return at, at + plen - 1
    end
  end
  if plen == 0 then return i, i - 1 end
  return nil
end
function M.match(s, p, init) return find_aux(s, p, init, false) end

function M.gmatch(s, p)
  begin(s, p)
  local s0, p0, pos = src, pat, 1
  return function()
    src, slen, pat, plen = s0, #s0, p0, #p0
    for i = pos, slen + 1 do
      level = 0
      local e = do_match(i, 1)
      if e then
        pos = e == i and e + 1 or e
        local caps, n = captures(i, e, true)
        return unpack(caps, 1, n)
      end
    end
    return nil
  end
end

-- The replacement text of one match for gsub.
local function replacement(repl, s, e)
  local whole = sub(src, s, e - 1)
  local t = type(repl)
  if t == "string" or t == "number" then
    repl = tostring(repl)
    local out, i = {}, 1
    while i <= #repl do
      local c = byte(repl, i)
      if c == PCT then
        i = i + 1
        local d = byte(repl, i)
        if d and in_range(d, 48, 57) then
          out[#out + 1] = d == 48 and whole or tostring(capture(d - 48, s, e))
        else
          out[#out + 1] = d and char(d) or ""
        end
      else
        out[#out + 1] = char(c)
      end
      i = i + 1
    end
    return concat(out)
  end
  local key = capture(1, s, e)
  local v
  if t == "table" then v = repl[key]
  elseif t == "function" then
    local caps, n = captures(s, e, true)
    v = repl(unpack(caps, 1, n))
  else
    error("bad argument #3 (string/function/table expected)", 0)
  end
  if v == nil or v == false then return whole end
  if type(v) ~= "string" and type(v) ~= "number" then
    error("invalid replacement value (a " .. type(v) .. ")", 0)
  end
  return tostring(v)
end

function M.gsub(s, p, repl, max_n)
  begin(s, p)
  local s0, p0 = src, pat
  local anchor, pstart = byte(pat, 1) == CARET, 1
  if anchor then pstart = 2 end
  max_n = tonumber(max_n) or slen + 1
  local out, i, n = {}, 1, 0
  while n < max_n do
    level = 0
    local e = do_match(i, pstart)
    if e then
      n = n + 1
      local r = replacement(repl, i, e)
      src, slen, pat, plen = s0, #s0, p0, #p0 -- a function may match too
      out[#out + 1] = r
    end
    if e and e > i then
      i = e
    elseif i <= slen then
      out[#out + 1] = sub(src, i, i)
      i = i + 1
    else
      break
    end
    if anchor then break end
  end
  out[#out + 1] = sub(src, i)
  return concat(out), n
end

-- The default order of table.sort, for large sorts the guard must be
-- able to stop (see sandbox.lua).
function M.less(a, b) return a < b end

return M
