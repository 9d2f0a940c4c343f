-- Where a setting or an example sits in a hook file's source text, so a
-- problem found in the settings table (which carries no line numbers) can
-- still be reported as file:line. The search is textual, a key followed
-- by "=", which fits how settings tables are written; when nothing is
-- found the caller gets line 1 rather than a guess.

local M = {}

local find, gsub, match = string.find, string.gsub, string.match
local tonumber = tonumber

-- The source's lines with "--" comments cut off, so a commented-out
-- setting is never taken for the real one.
local function code_lines(src)
  local lines = {}
  for line in (src .. "\n"):gmatch("([^\n]*)\n") do
    lines[#lines + 1] = (gsub(line, "%-%-.*$", ""))
  end
  return lines
end

local function escape(s)
  return (gsub(s, "[^%w_]", "%%%0"))
end

-- Whether the line assigns key: `key =` or `["key"] =`, never `key ==`.
local function assigns(line, key)
  local k = escape(key)
  return find(line, "%f[%w_]" .. k .. "%s*=%f[^=]") ~= nil or
    find(line, "%[%s*[\"']" .. k .. "[\"']%s*%]%s*=%f[^=]") ~= nil
end

-- The nth line at or after line from that assigns key, or nil.
local function nth_key(lines, key, n, from)
  for i = from, #lines do
    if assigns(lines[i], key) then
      n = n - 1
      if n == 0 then return i end
    end
  end
  return nil
end

-- Example n of the tests setting starts at the nth "event =" after
-- "tests =". nil when there is no tests key.
local function example_at(lines, n)
  local t = nth_key(lines, "tests", 1, 1)
  if not t then return nil end
  return nth_key(lines, "event", n, t) or t
end

-- The line of example n (1-based) of the hook's tests setting; 1 when it
-- cannot be found.
function M.example_line(src, n)
  return example_at(code_lines(src), n) or 1
end

-- The line of the setting a dotted path names ("send.url",
-- "custom_data.cname", "tests[2].expect"): each part is looked for from
-- the line of the part before; the deepest part found gives the line, 1
-- when not even the first one is there. An index selects the example of
-- tests and is ignored elsewhere (a list is usually on one line).
function M.key_line(src, path)
  local lines = code_lines(src)
  local line = nil
  for part in path:gmatch("[^.]+") do
    local name, index = match(part, "^([^%[]+)%[(%d+)%]$")
    name = name or part
    local at
    if name == "tests" and index then
      at = example_at(lines, tonumber(index))
    else
      at = nth_key(lines, name, 1, line or 1)
    end
    if not at then break end
    line = at
  end
  return line or 1
end

return M
