-- The catalog of names: databases, campaigns, segments, templates and
-- resources by id, as loaded from the catalog file and updated by the API.
-- Ids are keys in canonical decimal form ("973"), whatever the caller passes.

local json = require "hookd.json"

local M = {}

local type, pairs, tostring, setmetatable, getmetatable =
  type, pairs, tostring, setmetatable, getmetatable
local find, format, gsub, floor = string.find, string.format, string.gsub,
  math.floor

-- The kinds and the string fields an entry of each kind may carry.
local KINDS = {
  databases = { name = true },
  campaigns = { name = true, subid = true },
  segments = { name = true },
  templates = { name = true, subject = true },
  resources = { name = true },
}
M.KINDS = KINDS

local Catalog = {}
Catalog.__index = Catalog

-- Returns the canonical decimal key for an id given as a number, a decimal
-- string or a big-number literal from hookd.json; nil for anything else
-- (nil, json.null, booleans, tables, fractions, negatives).
function M.id_key(id)
  local t = type(id)
  if t == "number" then
    if id >= 0 and id == floor(id) and id < 2 ^ 63 then
      return format("%d", id)
    end
    return nil
  elseif t == "userdata" then
    id = tostring(id)
  elseif t ~= "string" then
    return nil
  end
  if not find(id, "^%d+$") then return nil end
  if find(id, "^0.") then
    id = gsub(id, "^0+", "")
    if id == "" then id = "0" end
  end
  return id
end

local function kind_names()
  return "databases, campaigns, segments, templates, resources"
end

-- Checks one entry; returns a fresh plain copy or nil, err.
local function check_entry(kind, key, entry)
  if type(entry) ~= "table" or getmetatable(entry) == json.array_mt then
    return nil, format("catalog: %s.%s must be an object", kind, key)
  end
  local fields = KINDS[kind]
  local copy = {}
  for f, v in pairs(entry) do
    if type(f) ~= "string" then
      return nil, format("catalog: %s.%s has a non-string key", kind, key)
    end
    if fields[f] and type(v) ~= "string" and type(v) ~= "userdata" then
      return nil, format("catalog: %s.%s.%s must be a string", kind, key, f)
    end
    -- json.null (a userdata) reads as absent; unknown fields are kept so
    -- newer catalog files load.
    if type(v) ~= "userdata" then copy[f] = v end
  end
  return copy
end

local function load_kind(self, kind, entries)
  if type(entries) ~= "table" or getmetatable(entries) == json.array_mt then
    return nil, format("catalog: %s must be an object", kind)
  end
  for id, entry in pairs(entries) do
    local key = M.id_key(id)
    if not key then
      return nil, format("catalog: %s: id '%s' is not a decimal integer",
        kind, tostring(id))
    end
    local copy, err = check_entry(kind, key, entry)
    if not copy then return nil, err end
    self.kinds[kind][key] = copy
  end
  return true
end

-- Builds a catalog from a decoded catalog file (nil gives an empty one).
-- Returns the catalog, or nil and an error naming the offending kind, id
-- or field (e.g. "catalog: unknown kind 'campains'").
function M.new(tbl)
  local self = setmetatable({ kinds = {} }, Catalog)
  for kind in pairs(KINDS) do self.kinds[kind] = {} end
  if tbl == nil then return self end
  if type(tbl) ~= "table" or getmetatable(tbl) == json.array_mt then
    return nil, "catalog: must be an object"
  end
  for kind, entries in pairs(tbl) do
    if not KINDS[kind] then
      return nil, format("catalog: unknown kind '%s' (known: %s)",
        tostring(kind), kind_names())
    end
    local ok, err = load_kind(self, kind, entries)
    if not ok then return nil, err end
  end
  return self
end

-- Returns the entry table ({name = ...}) or nil. Raises on an unknown kind:
-- that is a programming error, not data.
function Catalog:get(kind, id)
  local entries = self.kinds[kind]
  if not entries then
    error("catalog: unknown kind '" .. tostring(kind) .. "'", 2)
  end
  local key = M.id_key(id)
  if key == nil then return nil end
  return entries[key]
end

-- Sets (or with entry == nil removes) one entry. Returns true, or nil and
-- an error naming the kind, id or field.
function Catalog:set(kind, id, entry)
  if not KINDS[kind] then
    return nil, format("catalog: unknown kind '%s' (known: %s)",
      tostring(kind), kind_names())
  end
  local key = M.id_key(id)
  if not key then
    return nil, format("catalog: %s: id '%s' is not a decimal integer",
      kind, tostring(id))
  end
  if entry == nil then
    self.kinds[kind][key] = nil
    return true
  end
  local copy, err = check_entry(kind, key, entry)
  if not copy then return nil, err end
  self.kinds[kind][key] = copy
  return true
end

return M
