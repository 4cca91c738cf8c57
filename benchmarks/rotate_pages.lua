-- wrk script for benchmarks/index_server.py: every request asks for the next path of a list
-- (one per line), so a run walks all project pages instead of hammering one hot URL.
--
--   wrk -t2 -c16 -d5s -s rotate_pages.lua http://127.0.0.1:PORT/ -- PATHS_FILE THREADS
--
-- wrk's Lua API has no per-connection hook; each thread keeps its own cursor, and the threads
-- start evenly spread over the list, so no two connections ask for the same page at once.
-- Headers given with -H (Accept) go into every request.

local started = 0

function setup(thread)
    thread:set("id", started)
    started = started + 1
end

function init(args)
    requests = {}
    for line in io.lines(args[1]) do
        if line ~= "" then
            requests[#requests + 1] = wrk.format(nil, line)
        end
    end
    assert(#requests > 0, "no paths in " .. args[1])
    local threads = tonumber(args[2]) or 1
    cursor = ((id or 0) * math.floor(#requests / threads)) % #requests
end

function request()
    cursor = cursor % #requests + 1
    return requests[cursor]
end
