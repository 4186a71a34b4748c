-- weather.lua: "!weather Berlin" answers with the current weather, from
-- Open-Meteo (free, no key needed).
--
--   !weather CITY   the weather there now; the chat's city is remembered
--   !weather        the weather in the chat's last city
--
-- bot.http waits for the answer without holding up other messages; a
-- slow or broken service gets an apology, not an error.

local GEOCODE = "https://geocoding-api.open-meteo.com/v1/search"
local FORECAST = "https://api.open-meteo.com/v1/forecast"
local TIMEOUT_MS = 5000

local WEATHER = {
  [0] = "clear sky", [1] = "mainly clear", [2] = "partly cloudy", [3] = "overcast",
  [45] = "fog", [48] = "freezing fog",
  [51] = "light drizzle", [53] = "drizzle", [55] = "dense drizzle",
  [61] = "light rain", [63] = "rain", [65] = "heavy rain",
  [71] = "light snow", [73] = "snow", [75] = "heavy snow", [77] = "snow grains",
  [80] = "rain showers", [81] = "rain showers", [82] = "violent rain showers",
  [85] = "snow showers", [86] = "snow showers",
  [95] = "thunderstorm", [96] = "thunderstorm with hail", [99] = "thunderstorm with hail",
}

local function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- GET a JSON document: the decoded value, or nil and what to tell the user.
local function fetch(url)
  local r, err = bot.http.get(url, { timeout_ms = TIMEOUT_MS })
  if not r then
    bot.log.warn("weather: " .. err)
    return nil, "Sorry, the weather service didn't answer."
  end
  if r.status ~= 200 then
    return nil, "Sorry, the weather service answered " .. r.status .. "."
  end
  local doc = bot.json.decode(r.body)
  if type(doc) ~= "table" then return nil, "Sorry, the weather service sent something odd." end
  return doc
end

local function weather(city)
  local found, err = fetch(GEOCODE .. "?count=1&name=" .. urlencode(city))
  if not found then return err end
  local place = type(found.results) == "table" and found.results[1]
  if type(place) ~= "table" then return "I don't know a place called " .. city .. "." end
  local now, err2 = fetch(string.format(
    "%s?latitude=%s&longitude=%s&current=temperature_2m,wind_speed_10m,weather_code",
    FORECAST, place.latitude, place.longitude))
  if not now then return err2 end
  local c = type(now.current) == "table" and now.current or {}
  if type(c.temperature_2m) ~= "number" then return "Sorry, the weather service sent something odd." end
  local where = place.country and (place.name .. ", " .. place.country) or place.name
  return string.format("%s: %s °C, %s, wind %s km/h", where, c.temperature_2m,
    WEATHER[c.weather_code] or "weather unknown", c.wind_speed_10m or "?")
end

bot.command("weather", function(m, args)
  local city = args.text
  if city == "" then
    city = bot.store.get("city:" .. m.chat)
    if not city then
      m:reply("Usage: !weather CITY, e.g. !weather Berlin")
      return
    end
  else
    bot.store.set("city:" .. m.chat, city)
  end
  m:reply(weather(city))
end, "the weather now, e.g. !weather Berlin")
