-- flatten: nested JSON as one flat object of dotted keys, the shape most
-- warehouses load as columns.
--
--   local flatten = require "flatten"
--   flatten.value({a = {b = 1, c = {"x", "y"}}})
--     --> {["a.b"] = 1, ["a.c.0"] = "x", ["a.c.1"] = "y"}
--   shape = function(message)
--     return flatten.message(message)  -- event_data.*, custom_data.*
--   end
--
-- Objects give "parent.key", arrays "parent.<index>" counted from 0 as in
-- JSON paths. null stays null, and an empty object or array stays as it
-- is (so [] and {} still load as such). Below max_depth levels (default
-- 8) the rest of a value is kept whole as its JSON text, so a deeply
-- nested or hostile value costs a bounded number of keys and loses
-- nothing. Keys are not escaped: a key that contains the separator can
-- collide with a nested one, the later one wins.
--
-- flatten.message(message, opts) flattens only the fields named in
-- opts.fields (default {"event_data", "custom_data"}) into the top level
-- ("event_data.campaign_id"), and leaves every other field as it came.
-- Both take opts.sep (default ".") and opts.max_depth.

local M = {}

local function options(opts)
  opts = opts or {}
  local depth = opts.max_depth or 8
  if type(depth) ~= "number" or depth < 1 or depth ~= math.floor(depth) then
    error("flatten: max_depth must be a positive integer", 3)
  end
  local sep = opts.sep or "."
  if type(sep) ~= "string" then error("flatten: sep must be a string", 3) end
  return depth, sep
end

local function is_container(v)
  return type(v) == "table" and next(v) ~= nil
end

-- Writes v into out under prefix, going depth levels further at most.
local function walk(out, prefix, v, depth, sep)
  if not is_container(v) then
    out[prefix] = v
    return
  end
  if depth == 0 then
    out[prefix] = json.encode(v)
    return
  end
  local lead = prefix == "" and "" or prefix .. sep
  if json.is_array(v) then
    for i = 1, #v do walk(out, lead .. (i - 1), v[i], depth - 1, sep) end
  else
    for k, item in pairs(v) do
      walk(out, lead .. tostring(k), item, depth - 1, sep)
    end
  end
end

-- v (a table) as a flat table of dotted keys; see the top of the file.
function M.value(v, opts)
  local depth, sep = options(opts)
  local out = {}
  if not is_container(v) then return out end
  walk(out, "", v, depth, sep)
  return out
end

-- A copy of message whose opts.fields are flattened into the top level.
function M.message(message, opts)
  local depth, sep = options(opts)
  local fields = (opts and opts.fields) or {"event_data", "custom_data"}
  local out, flat = {}, {}
  for _, name in ipairs(fields) do flat[name] = true end
  for k, v in pairs(message) do
    if flat[k] then
      walk(out, k, v, depth, sep)
    else
      out[k] = v
    end
  end
  return out
end

return M
