-- Never finishes reading: the sandbox's instruction limit must stop it.
local trellis = require "trellis"
while true do end
