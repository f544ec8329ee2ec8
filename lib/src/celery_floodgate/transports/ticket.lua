-- A refused caller's ticket (line.lua). KEYS[1]: the line's next free slot (epoch s).
-- ARGV: excess, drain rate, longest wait, one turnover of the queue in seconds, pending.
return tostring(line_ticket(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
                            tonumber(ARGV[4]), tonumber(ARGV[5])))
