-- The examples a hook keeps in its tests setting: whether what the hook
-- made of an example's event is what the example expects, and if not, a
-- short account of the first difference. Running the event through the
-- hook is the router's job (see router.lua).

local json = require "hookd.json"

local M = {}

local type, pairs, next, tostring, pcall, getmetatable =
  type, pairs, next, tostring, pcall, getmetatable
local format = string.format
local array_mt = json.array_mt

local SHOWN_MAX = 80

-- A value as short JSON text for a message; "nothing" for a missing one.
local function show(v)
  if v == nil then return "nothing" end
  local ok, text = pcall(json.encode, v)
  if not ok then text = tostring(v) end
  if #text > SHOWN_MAX then text = text:sub(1, SHOWN_MAX - 3) .. "..." end
  return text
end
M.show = show

-- What a value is for matching. Decoded values carry the codec's array
-- or object metatable; a table written in the hook file has none: a list
-- with items is an array, an empty table may stand for either.
local function kind(v)
  if type(v) ~= "table" then return "scalar" end
  local mt = getmetatable(v)
  if mt == array_mt then return "array" end
  if mt ~= nil then return "object" end
  if next(v) == nil then return "empty" end
  local n = #v
  if n == 0 then return "object" end
  for k in pairs(v) do
    if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
      return "object"
    end
  end
  return "array"
end

-- Scalars match when Lua says they are equal, or when they encode to the
-- same JSON (a number the codec keeps as a literal, such as a 19-digit id).
local function same_scalar(a, b)
  if a == b then return true end
  if a == nil or b == nil or type(a) == "table" or type(b) == "table" then
    return false
  end
  local ok1, ta = pcall(json.encode, a)
  local ok2, tb = pcall(json.encode, b)
  return ok1 and ok2 and ta == tb
end

local sorted_keys = require("hookd.settings").sorted_keys

local function sub_path(path, k)
  if path == "" then return tostring(k) end
  return path .. "." .. tostring(k)
end

local diff

-- Arrays match exactly: same length, every item equal.
local function diff_array(want, got, path)
  if #want ~= #got then return path, want, got end
  for i = 1, #want do
    local p, w, g = diff(want[i], got[i], path .. "[" .. i .. "]", true)
    if p then return p, w, g end
  end
  return nil
end

-- Every key the expected object names must match; exact (inside an
-- array) also refuses keys it does not name.
local function diff_object(want, got, path, exact)
  for _, k in pairs(sorted_keys(want)) do
    local p, w, g = diff(want[k], got[k], sub_path(path, k), exact)
    if p then return p, w, g end
  end
  if not exact then return nil end
  for _, k in pairs(sorted_keys(got)) do
    if want[k] == nil then return sub_path(path, k), nil, got[k] end
  end
  return nil
end

-- The first place where got differs from want: its path, and the two
-- values there; nil when they match.
diff = function(want, got, path, exact)
  local wk, gk = kind(want), kind(got)
  if wk == "scalar" then
    if same_scalar(want, got) then return nil end
    return path, want, got
  end
  if wk == "empty" then
    if gk == "array" and #got == 0 then return nil end
    if gk == "object" and (not exact or next(got) == nil) then return nil end
    return path, want, got
  end
  if wk ~= gk then return path, want, got end
  if wk == "array" then return diff_array(want, got, path) end
  return diff_object(want, got, path, exact)
end

-- Compares an expected table with a decoded message. Returns nil when the
-- message matches, else "path: expected X, got Y" for the first
-- difference.
function M.compare(want, got)
  local path, w, g = diff(want, got, "", false)
  if not path then return nil end
  return format("%s: expected %s, got %s", path == "" and "message" or path,
    show(w), show(g))
end

-- The verdict on one example. status and value are what the router made
-- of its event: "message" and the JSON text, "dropped" and why, or
-- "error" and the error. Returns nil when the example holds, else why not.
function M.verdict(expect, status, value)
  if status == "error" then return "error: " .. value end
  if expect == false then
    if status == "dropped" then return nil end
    return "expected the event to be dropped, got " .. show(json.decode(value))
  end
  if status == "dropped" then
    return "expected a message, but the event was dropped: " .. value
  end
  return M.compare(expect, json.decode(value))
end

return M
